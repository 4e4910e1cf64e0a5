"""``alignkit data translate``: multilingual instruction data by translation.

Two ways, as the alignment-data survey names them (``mode=``):

* ``post-answering``: translate each instruction into a target language, then have the
  step's model answer the translation (``answer_template``): ``{"prompt", "completion"}``
  in that language;
* ``post-translating``: translate an instruction and its response: the pair in the target
  language.

The translator is a backend (``translator=``): ``model`` (default) prompts the step's causal
LM with ``translation_template`` through alignkit's generation (greedy by default); plugins
add others (a CTranslate2 or Argos model the user installed) through the
``alignkit_register_translators`` hook. Prompts that are chat messages are translated message
by message.

Every translated text (and, with ``language_check=all``, every answer) is checked with the
``py3langid`` language identifier: an example whose text is not identified as the target
language with probability ``>= min_confidence`` is rejected and counted
(``rejected_language.<lang>``), as is one with an empty translation or answer
(``rejected_empty.<lang>``). Where a reference exists the translation is scored with chrF
(``sacrebleu``): ``reference_fields.<lang>=<column>`` names the input column holding a
reference translation of the prompt (``chrf``), and ``round_trip=true`` translates the prompt
back into ``source_language`` and scores that against the original (``round_trip_chrf``).

Rows: ``{"prompt", "completion", "language", "mode", "source_index", "source_prompt",
"source_completion"[, "chrf"][, "round_trip_chrf"]}`` (the ``sft`` format; a training run
reports the ``language`` column in ``data_stats.json``). Counts: ``kept.<lang>``,
``rejected_*.<lang>``, mean ``chrf.<lang>`` and ``round_trip_chrf.<lang>``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.io import to_examples
from alignkit.datagen.similarity import require
from alignkit.datagen.spec import ModelStepConfig, TranslatorSpec
from alignkit.datagen.templates import TRANSLATE_ANSWER_TEMPLATE, TRANSLATION_TEMPLATE, load_template
from alignkit.errors import UserError
from alignkit.rollout.config import SamplingConfig, sampling_kwargs

__all__ = ["TranslateConfig", "run_translate", "translators", "ModelTranslator", "LanguageChecker", "chrf",
           "LANGUAGE_NAMES"]

#: names the translation prompt uses for ISO 639-1 codes (add others with language_names.<code>=<Name>)
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "sv": "Swedish", "pl": "Polish", "cs": "Czech",
                  "ru": "Russian", "uk": "Ukrainian", "tr": "Turkish", "ar": "Arabic", "hi": "Hindi",
                  "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "vi": "Vietnamese", "id": "Indonesian"}


@dataclass
class TranslateConfig(ModelStepConfig):
    input: str = MISSING  #: instructions (post-answering) or instruction-response pairs (post-translating)
    format: str = "auto"  #: data format of `input` (alignkit list shows them)
    fields: Dict[str, str] = field(default_factory=dict)  #: normalised field -> column name in `input`
    mode: str = "post-answering"  #: post-answering | post-translating
    target_languages: List[str] = field(default_factory=lambda: ["de"])  #: ISO 639-1 codes
    source_language: str = "en"  #: the language of `input`
    language_names: Dict[str, str] = field(default_factory=lambda: dict(LANGUAGE_NAMES))  #: code -> name in prompts
    translator: str = "model"  #: model (the step's causal LM) or a plugin's backend (alignkit list shows them)
    translation_template: str = TRANSLATION_TEMPLATE  #: fields {source} {target} {text}; file:<path> reads a file
    answer_template: str = TRANSLATE_ANSWER_TEMPLATE  #: post-answering: fields {instruction} {target}
    translation: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=256, temperature=0.0))
    answer: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=256, temperature=0.7,
                                                                          top_p=0.9))
    language_check: str = "all"  #: all (translations and answers) | translation | none
    min_confidence: float = 0.5  #: py3langid probability the target language needs
    reference_fields: Dict[str, str] = field(default_factory=dict)  #: language -> column of a reference (chrF)
    round_trip: bool = False  #: translate the prompt back and score it against the original (chrF)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, mode="one of post-answering|post-translating", language_check="one of all|translation|none",
              min_confidence="in [0, 1]")


# -- backends -----------------------------------------------------------------------------------

class ModelTranslator:
    """Translation by prompting a causal LM with ``translation_template`` (alignkit's generation)."""

    def __init__(self, cfg: Any, step: Any, policy: tuple[Any, Any]):
        self.cfg, self.policy, self.data_cfg = cfg, policy, step.tokenization()
        self.template = load_template(str(cfg.translation_template), "translation_template",
                                      ("source", "target", "text"))

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        from alignkit.rollout.generation import generate_from_prompts

        names = self.cfg.language_names
        prompts = [self.template.format(source=names[source], target=names[target], text=t) for t in texts]
        out: list[str] = []
        bs = int(self.cfg.batch_size)
        for start in range(0, len(prompts), bs):
            out += generate_from_prompts(*self.policy, prompts[start:start + bs], self.data_cfg,
                                         **sampling_kwargs(self.cfg.translation)).completions
        return [t.strip() for t in out]


MODEL_TRANSLATOR = TranslatorSpec("model", ModelTranslator, "the step's causal LM with translation_template",
                                  needs_model=True)


def translators(registry: Any) -> dict[str, tuple[TranslatorSpec, str]]:
    """Every backend registered through ``alignkit_register_translators``: name -> (spec, plugin)."""
    from alignkit.registry import _collect

    table: dict = {}
    _collect(registry.pm, "alignkit_register_translators", "translator", table, lambda s: s.name)
    return table


# -- checks and scores ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    """py3langid's identifier with normalised probabilities (its model loads once per process, ~2 s)."""
    langid = require("py3langid.langid", "py3langid", "translate")
    return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


class LanguageChecker:
    """Language identification with ``py3langid`` (a maintained fork of langid.py: 97 languages, its
    model ships in the package, nothing is downloaded)."""

    def __init__(self, min_confidence: float):
        self.identifier = _identifier()
        self.min_confidence = float(min_confidence)

    def known(self, code: str) -> bool:
        return code in self.identifier.nb_classes

    def identify(self, text: str) -> tuple[str, float]:
        lang, prob = self.identifier.classify(text)
        return str(lang), float(prob)

    def is_language(self, text: str, code: str) -> bool:
        lang, prob = self.identify(text)
        return lang == code and prob >= self.min_confidence


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (``sacrebleu``, its defaults: character 6-grams, beta 2), 0-100."""
    sacrebleu = require("sacrebleu", "sacrebleu", "translate")
    return round(float(sacrebleu.sentence_chrf(hypothesis, [reference]).score), 4)


# -- the step --------------------------------------------------------------------------------------

def _texts(prompt: Any) -> list[str]:
    """The texts of a prompt to translate: the string, or each message's content."""
    return [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]


def _rebuild(prompt: Any, texts: list[str]) -> Any:
    return texts[0] if isinstance(prompt, str) else [{**m, "content": t} for m, t in zip(prompt, texts)]


class Translation:
    """One configured run: backend, checker, templates; :meth:`batch` turns examples into rows."""

    def __init__(self, cfg: Any, step: Any, backend: Any, policy: tuple[Any, Any] | None):
        self.cfg, self.step, self.backend, self.policy = cfg, step, backend, policy
        self.checker = LanguageChecker(cfg.min_confidence) if cfg.language_check != "none" else None
        self.answer_template = load_template(str(cfg.answer_template), "answer_template", ("instruction", "target"))

    def _translate(self, texts: list[str], source: str, target: str) -> list[str]:
        out = [str(t).strip() for t in self.backend.translate(list(texts), source, target)] if texts else []
        if len(out) != len(texts):
            raise UserError(f"translator {self.cfg.translator!r} returned {len(out)} translations for {len(texts)} "
                            "texts", "fix the backend: translate() must return one translation per text, in order")
        return out

    def _answers(self, prompts: list[Any], target: str) -> list[str]:
        from alignkit.rollout.generation import generate_from_prompts

        name = self.cfg.language_names[target]
        asks = [self.answer_template.format(instruction=p, target=name) if isinstance(p, str) else p for p in prompts]
        return [a.strip() for a in generate_from_prompts(*self.policy, asks, self.step.tokenization(),
                                                         **sampling_kwargs(self.cfg.answer)).completions]

    def batch(self, examples: list[tuple[int, dict, dict]], target: str) -> list[dict]:
        """Rows in ``target`` for ``(index, example, raw row)`` triples; rejects counted in ``step.counts``."""
        cfg, counts, src = self.cfg, self.step.counts, str(self.cfg.source_language)
        post_translating = cfg.mode == "post-translating"
        units = [t for _, ex, _ in examples for t in _texts(ex["prompt"])]
        if post_translating:
            units += [ex["completion"] for _, ex, _ in examples]
        done = self._translate(units, src, target)
        prompts, k = [], 0
        for _, ex, _ in examples:
            n = len(_texts(ex["prompt"]))
            prompts.append(_rebuild(ex["prompt"], done[k:k + n]))
            k += n
        completions = done[k:] if post_translating else self._answers(prompts, target)
        back = self._translate([p for p in prompts if isinstance(p, str)], target, src) if cfg.round_trip else []
        back_iter = iter(back)
        rows = []
        for (i, ex, raw), prompt, completion in zip(examples, prompts, completions):
            translated = _texts(prompt) + ([completion] if post_translating else [])
            checked = translated + ([completion] if cfg.language_check == "all" and not post_translating else [])
            row = {"prompt": prompt, "completion": completion, "language": target, "mode": str(cfg.mode),
                   "source_index": i, "source_prompt": ex["prompt"], "source_completion": ex.get("completion")}
            if cfg.round_trip and isinstance(prompt, str):
                row["round_trip_chrf"] = chrf(next(back_iter), ex["prompt"])
            reference = raw.get(cfg.reference_fields[target]) if target in cfg.reference_fields else None
            if isinstance(reference, str) and isinstance(prompt, str):
                row["chrf"] = chrf(prompt, reference)
            if not all(t.strip() for t in translated + [completion]):
                counts[f"rejected_empty.{target}"] += 1
            elif self.checker is not None and not all(self.checker.is_language(t, target) for t in checked):
                counts[f"rejected_language.{target}"] += 1
            else:
                counts[f"kept.{target}"] += 1
                rows.append(row)
        return rows


def _check_languages(cfg: Any, checker: LanguageChecker | None) -> list[str]:
    targets = [str(t) for t in cfg.target_languages]
    if not targets:
        raise UserError("translate needs at least one target language", "pass target_languages=[de] (ISO 639-1)")
    for code in [*targets, str(cfg.source_language)]:
        if code not in cfg.language_names:
            known = ", ".join(sorted(cfg.language_names))
            raise UserError(f"no language name for {code!r} (language_names has {known})",
                            f"add one: +language_names.{code}=<English name of the language>")
        if checker is not None and not checker.known(code):
            raise UserError(f"the language identifier (py3langid) does not know {code!r}",
                            "use ISO 639-1 codes (de, fr, zh, ...), or language_check=none")
    for code, column in cfg.reference_fields.items():
        if code not in targets:
            raise UserError(f"reference_fields.{code}={column} names a language not in target_languages={targets}",
                            f"add {code} to target_languages or remove reference_fields.{code}")
    return targets


def run_translate(cfg: Any, step: Any) -> None:
    import torch

    backends = translators(step.registry)
    if cfg.translator not in backends:
        raise UserError(f"unknown translator {cfg.translator!r}", f"choose one of: {', '.join(sorted(backends))}")
    spec = backends[cfg.translator][0]
    rows = step.read(str(cfg.input))
    kind = "sft" if cfg.mode == "post-translating" else "prompt"
    examples = to_examples(rows, kind, str(cfg.format), dict(cfg.fields or {}), step.formats(), step.counts)
    if cfg.reference_fields and len(examples) != len(rows):
        raise UserError(f"{rows.path}: its format makes {len(examples)} examples of {len(rows)} records, so "
                        "reference_fields cannot be matched to them",
                        "convert it first with alignkit data mix kind=sft")
    raws = rows.rows if len(examples) == len(rows) else [{}] * len(examples)
    policy = step.load_model() if spec.needs_model or cfg.mode == "post-answering" else None
    backend = spec.build(cfg, step, policy if spec.needs_model else None)
    step.models["translator"] = {"backend": str(cfg.translator)}
    work = Translation(cfg, step, backend, policy)
    targets = _check_languages(cfg, work.checker)
    done = int(step.start().get("done", 0))
    bar = step.progress(len(examples), done, "example")
    bs = int(cfg.batch_size)
    for start in range(done, len(examples), bs):
        torch.manual_seed(step.seed(start // bs))
        batch = [(i, examples[i], raws[i]) for i in range(start, min(start + bs, len(examples)))]
        made = [row for target in targets for row in work.batch(batch, target)]
        step.commit_batch(start + len(batch), {"rows": made})
        bar.update(len(batch))
    bar.close()
    written = step.work.rows("rows")
    for target in targets:
        for key in ("chrf", "round_trip_chrf"):
            scores = [r[key] for r in written if r["language"] == target and key in r]
            if scores:
                step.counts[f"{key}.{target}"] = round(sum(scores) / len(scores), 2)
    step.counts["examples"] = len(examples)
    step.write(written)
