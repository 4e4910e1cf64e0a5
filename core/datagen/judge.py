"""A local model as judge: rubric prompt, score parser, retries.

:func:`parse_score` reads a rubric score out of free text, in this order:

1. a labelled number: ``Score: 4``, ``**Rating:** 5``, ``my rating is 3``, ``rated as a 2``,
   ``Score: four`` (number words zero to ten); the first label decides;
2. a fraction of the scale's top: ``4/5``, ``3 out of 5``;
3. otherwise the one distinct number in the text within the scale (``I'd give it a 4.``).

A score outside ``[min_score, max_score]`` or an ambiguous answer (``between 2 and 4``)
gives ``None``. :class:`Judge` asks again (sampling at ``retry_temperature``) up to
``retries`` times for answers that do not parse; what still does not parse is reported
as ``None`` and counted as a skip by the caller, never guessed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from alignkit.config.schema import check
from alignkit.datagen.io import as_text
from alignkit.datagen.templates import JUDGE_TEMPLATE, load_template
from alignkit.errors import UserError

__all__ = ["JudgeConfig", "Judge", "parse_score"]

_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10}
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(_WORDS) + r")\b"
_LABELLED = re.compile(r"\b(?:score|rating|grade|rated?)\b[\s:=\-]*(?:(?:is|of|as|a|an|at)\s+){0,3}" + _NUM, re.I)
_FRACTION = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.I)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d]|\.\d)")


def _value(token: str) -> float:
    return float(_WORDS.get(token.lower(), token))


def parse_score(text: str, min_score: float = 1, max_score: float = 5) -> Optional[float]:
    """The rubric score in a judge's answer, or ``None`` (see the module docstring)."""
    plain = text.replace("*", "").replace("#", "")
    in_range = lambda v: min_score <= v <= max_score  # noqa: E731
    labelled = _LABELLED.search(plain)
    if labelled:
        v = _value(labelled.group(1))
        return v if in_range(v) else None
    for num, den in _FRACTION.findall(plain):
        if float(den) == float(max_score):
            v = float(num)
            return v if in_range(v) else None
    found = {float(n) for n in _NUMBER.findall(plain)} | {float(_WORDS[w]) for w in re.findall(
        r"\b(" + "|".join(_WORDS) + r")\b", plain.lower())}
    candidates = {v for v in found if in_range(v)}
    return candidates.pop() if len(candidates) == 1 else None


@dataclass
class JudgeConfig:
    template: str = JUDGE_TEMPLATE  #: fields {instruction} {response} {min_score} {max_score}; file:<path> reads a file
    min_score: int = 1  #: bottom of the rubric scale
    max_score: int = 5  #: top of the rubric scale
    max_new_tokens: int = 24  #: the score comes first: a short answer suffices
    temperature: float = 0.0  #: first attempt (0 = greedy)
    retries: int = 2  #: new attempts for answers that do not parse
    retry_temperature: float = 0.7  #: sampling temperature of the retries (greedy would repeat the answer)
    model_path: Optional[str] = None  #: a separate judge (HF folder or hub name); None: the step's model
    require_chat_template: bool = True  #: a judge must be an instruct model; false sends the rubric as plain text

    def __post_init__(self) -> None:
        check(self, max_new_tokens=">= 1", temperature=">= 0", retries=">= 0", retry_temperature="> 0")
        if self.max_score <= self.min_score:
            from alignkit.config.schema import ConfigValueError

            raise ConfigValueError("max_score", self.max_score, f"> min_score ({self.min_score})")


class Judge:
    """Grades ``(prompt, response)`` pairs with a causal LM and :data:`JudgeConfig.template`.

    Also a scorer for best-of-n sampling: ``judge(prompts, completions)`` returns a float
    tensor ``[N]`` with NaN where the answer never parsed."""

    FIELDS = ("instruction", "response", "min_score", "max_score")

    def __init__(self, model: Any, tokenizer: Any, cfg: Any, data_cfg: Any, *, batch_size: int = 8,
                 name: str = "model", key: str = "judge"):
        from alignkit.data.tokenize import has_chat_template

        if cfg.require_chat_template and not has_chat_template(tokenizer):
            raise UserError(f"the judge model {name!r} has no chat template, so it cannot be asked to grade",
                            f"use an instruct model (model=smollm2-135m, or {key}.model_path=<folder>), or set "
                            f"{key}.require_chat_template=false to send the rubric as plain text")
        self.model, self.tokenizer, self.cfg, self.data_cfg = model, tokenizer, cfg, data_cfg
        self.template = load_template(str(cfg.template), f"{key}.template", self.FIELDS)
        self.batch_size = int(batch_size)
        self.answers: list[str] = []  #: the last answer to each item of the last :meth:`grade` call

    def prompt(self, prompt: Any, response: str) -> str:
        return self.template.format(instruction=as_text(prompt), response=response,
                                    min_score=self.cfg.min_score, max_score=self.cfg.max_score)

    def grade(self, prompts: Sequence, responses: Sequence[str]) -> list[Optional[float]]:
        """A score (or None) for each pair; the judge's last answers are left in :attr:`answers`."""
        from alignkit.rollout.generation import generate_from_prompts

        asks = [self.prompt(p, r) for p, r in zip(prompts, responses)]
        scores: list[Optional[float]] = [None] * len(asks)
        self.answers = [""] * len(asks)
        pending = list(range(len(asks)))
        for attempt in range(1 + int(self.cfg.retries)):
            temperature = float(self.cfg.temperature if attempt == 0 else self.cfg.retry_temperature)
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start:start + self.batch_size]
                roll = generate_from_prompts(self.model, self.tokenizer, [asks[i] for i in chunk], self.data_cfg,
                                             max_new_tokens=int(self.cfg.max_new_tokens), temperature=temperature)
                for i, answer in zip(chunk, roll.completions):
                    self.answers[i] = answer
                    scores[i] = parse_score(answer, self.cfg.min_score, self.cfg.max_score)
            pending = [i for i in pending if scores[i] is None]
            if not pending:
                break
        return scores

    def __call__(self, prompts: Sequence, completions: Sequence[str], *, references: Sequence | None = None,
                 **_: Any) -> torch.Tensor:
        scores = self.grade(prompts, completions)
        return torch.tensor([float("nan") if s is None else s for s in scores], dtype=torch.float32)
