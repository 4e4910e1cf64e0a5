"""Every hook alignkit calls, in one place.

A plugin is any module or object with functions named like the specs below and
decorated with ``alignkit.hookimpl``. Plugins are found through the
``alignkit.plugins`` entry-point group; alignkit's own algorithms register
through the very same group (see ``setup.py``), so a third-party plugin has
exactly the powers of a built-in one.

Registration hooks return lists; alignkit collects the results of *all*
plugins (no first-result-wins) and raises an error naming both plugins when two
claim the same name. Lifecycle hooks are notifications: their return values
are ignored and every implementation is called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from alignkit.rollout.engine import RolloutEngineSpec
    from alignkit.algorithm import AlgorithmSpec, RunContext
    from alignkit.data.formats import DataFormatSpec, DatasetPreset
    from alignkit.datagen.spec import DataStepSpec, TranslatorSpec
    from alignkit.evaluation.spec import EvalMetricSpec

hookspec = pluggy.HookspecMarker("alignkit")


# --------------------------------------------------------------------------
# Registration: called once when the plugin manager is built, before any
# config is composed (algorithm configs go into Hydra's ConfigStore).
# --------------------------------------------------------------------------


@hookspec
def alignkit_register_algorithms() -> list[AlgorithmSpec]:
    """Return the algorithms this plugin provides.

    Each :class:`alignkit.AlgorithmSpec` names the algorithm (the value of
    ``algo=`` on the command line), its config dataclass (stored in Hydra's
    ConfigStore under ``algo/<name>`` so overrides are type-checked), the
    implementation class and a one-line description shown by ``alignkit list``.
    """


@hookspec
def alignkit_register_data_formats() -> list[DataFormatSpec]:
    """Return record formats this plugin can read.

    A :class:`alignkit.DataFormatSpec` has a ``name`` (used as ``format:`` in a
    data source), the example ``kind`` it produces (``sft``, ``preference``,
    ``ranked`` or ``prompt``) and a ``convert(record, fields) -> dict`` function
    that maps one raw record to alignkit's normalised example for that kind.
    """


@hookspec
def alignkit_register_datasets() -> list[DatasetPreset]:
    """Return named data presets (usable as ``data=<name>`` when no YAML of that
    name exists in ``conf/data``). Each :class:`alignkit.DatasetPreset` holds a
    name, a description and the data config as a plain dict."""


@hookspec
def alignkit_register_reward_functions() -> dict[str, Callable[..., list[float]]]:
    """Return reward functions by name.

    A reward function is ``f(prompts: list, completions: list[str], **kw)
    -> list[float]``; online algorithms (PPO, RAFT, GRPO, RLOO, ranked-list
    sampling) select one with ``reward.function=<name>`` and pass keyword
    arguments from ``reward.kwargs``. Each prompt is raw, as the data gave it:
    a string, or a list of chat messages ``{"role", "content"}`` (never the
    chat-template rendering); each completion is the decoded response without
    its stop token.
    """


@hookspec
def alignkit_register_data_steps() -> list[DataStepSpec]:
    """Return data steps this plugin provides (``alignkit data <name>``).

    A :class:`alignkit.datagen.DataStepSpec` names the step, its config dataclass
    (derive it from :class:`alignkit.datagen.StepConfig`, or ``ModelStepConfig`` for
    steps that load ``model=``; overrides are type-checked), a
    ``run(cfg, step: StepRun)`` function (it reads, counts and writes through ``step``), and a
    one-line description shown by ``alignkit data``. The built-in steps
    (``self-instruct``, ``score``, ``select``, ``pairs``, ``self-chat``, ``sdf``,
    ``translate``, ``dedup``, ``mix``) register through this hook too.
    """


@hookspec
def alignkit_register_translators() -> list[TranslatorSpec]:
    """Return translation backends for ``alignkit data translate translator=<name>``.

    A :class:`alignkit.datagen.TranslatorSpec` has a ``name``, a one-line
    ``description`` and ``build(cfg, step, policy)``, which returns an object with
    ``translate(texts: list[str], source: str, target: str) -> list[str]`` (ISO 639-1
    codes, one translation per text, in order). ``policy`` is the step's ``(model,
    tokenizer)`` for the built-in ``model`` backend and None for the others, which
    load what they need themselves (a CTranslate2 or Argos model the user installed).
    """


@hookspec
def alignkit_register_eval_metrics() -> list[EvalMetricSpec]:
    """Return generation metrics for ``alignkit eval``.

    An :class:`alignkit.api.EvalMetricSpec` names the metric and gives
    ``fn(prompts, policy, reference) -> dict[str, float]``: the held-out prompts (raw, as
    the data gave them), the policy's responses and the reference's responses to them
    (decoded strings without the stop token; ``reference`` is ``None`` when the evaluation
    has no reference model). Each returned value is reported as ``<name>/<key>`` in
    ``eval.json`` and ``eval.md``. The built-in ``distinct`` metric (distinct-1/2)
    registers through this hook too; two plugins claiming one name is an error.
    """


@hookspec
def alignkit_register_rollout_engines() -> list[RolloutEngineSpec]:
    """Return rollout engines (``rollout.engine=<name>``) this plugin provides.

    A :class:`alignkit.api.RolloutEngineSpec` has a ``name``, a one-line ``description`` and
    ``build(cfg, run)``, which returns a :class:`alignkit.api.RolloutEngine` for the run's
    ``rollout`` config and :class:`alignkit.RunContext`: ``generate(batch, num_samples=,
    sampling=, seeds=) -> Rollout`` (token ids as sampled, optionally the engine's per-token
    log-probs), ``sync_weights()`` after the policy changed, ``reseed(seed)`` and ``close()``.
    The built-in ``hf`` and ``vllm`` engines register through this hook too.
    """


# --------------------------------------------------------------------------
# Lifecycle: called by the trainer while a run goes on. ``run`` is the
# :class:`alignkit.RunContext` (config, models, tokenizer, output folder).
# --------------------------------------------------------------------------


@hookspec
def alignkit_on_train_start(run: RunContext) -> None:
    """Called once after models, data and optimiser are built, before step 1."""


@hookspec
def alignkit_on_step_end(run: RunContext, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimiser step with that step's training metrics
    (names like ``train/loss``)."""


@hookspec
def alignkit_on_evaluate(run: RunContext, step: int, metrics: dict[str, float]) -> None:
    """Called after each evaluation with its metrics (names like ``eval/loss``)."""


@hookspec
def alignkit_on_checkpoint_saved(run: RunContext, step: int, path: str) -> None:
    """Called after a checkpoint folder has been completely written to ``path``."""


@hookspec
def alignkit_on_train_end(run: RunContext, metrics: dict[str, Any]) -> None:
    """Called once after the final model is saved, with the last metrics."""
