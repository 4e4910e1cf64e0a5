"""``alignkit data``: make and curate alignment data with local models.

Steps (``alignkit data <step> [key=value ...]``), one module each:

* ``self-instruct`` (:mod:`~alignkit.datagen.self_instruct`): new instructions from seed tasks;
* ``score`` / ``select`` (:mod:`~alignkit.datagen.score`): judge or reward scores, then keep the best;
* ``pairs`` (:mod:`~alignkit.datagen.pairs`): best-of-n preference pairs and ranked lists;
* ``self-chat`` (:mod:`~alignkit.datagen.self_chat`): multi-turn dialogues from seed questions (Baize);
* ``sdf`` (:mod:`~alignkit.datagen.sdf`): self-distillation with feedback on every dialogue turn;
* ``translate`` (:mod:`~alignkit.datagen.translate`): post-answering / post-translating, language-checked;
* ``dedup`` (:mod:`~alignkit.datagen.dedup`): exact and near duplicates;
* ``mix`` (:mod:`~alignkit.datagen.mix`): weighted mixtures of sources;
* ``arithmetic`` (:mod:`~alignkit.datagen.arithmetic`): a verifiable task, disjoint train/held-out files.

Plugins add steps through the ``alignkit_register_data_steps`` hook with a
:class:`DataStepSpec`; a step is a config dataclass (deriving from :class:`StepConfig` or
:class:`ModelStepConfig`) and a function ``run(cfg, step)`` that reads, counts and writes
through the :class:`~alignkit.datagen.run.StepRun` it is handed::

    from dataclasses import dataclass
    from omegaconf import MISSING
    from alignkit import hookimpl
    from alignkit.datagen import DataStepSpec, StepConfig

    @dataclass
    class UpperConfig(StepConfig):
        input: str = MISSING

    def upper(cfg, step):
        rows = step.read(cfg.input)
        step.counts["rows"] = len(rows)
        step.write([{**r, "prompt": r["prompt"].upper()} for r in rows.rows])

    @hookimpl
    def alignkit_register_data_steps():
        return [DataStepSpec("upper", UpperConfig, upper, "upper-case every prompt")]

Shared machinery: :mod:`~alignkit.datagen.run` (outputs, provenance, seeds, models),
:mod:`~alignkit.datagen.work` (resumption), :mod:`~alignkit.datagen.io` (files),
:mod:`~alignkit.datagen.judge` (rubric scores), :mod:`~alignkit.datagen.scoring`,
:mod:`~alignkit.datagen.similarity`, :mod:`~alignkit.datagen.templates`.
"""
from alignkit.datagen.spec import DataStepSpec, ModelStepConfig, StepConfig, TranslatorSpec

__all__ = ["DataStepSpec", "StepConfig", "ModelStepConfig", "TranslatorSpec"]
