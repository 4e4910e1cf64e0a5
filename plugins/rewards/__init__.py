"""Rule-based reward functions for tests, demos and sanity checks.

Each is ``f(prompts, completions, **kw) -> list[float]``, scores every completion on its
own (a score never depends on the rest of the batch: same input, same output) and is
selected with ``algo.reward.function=<name>``; keyword arguments come from
``algo.reward.kwargs``.

* ``char_frequency`` -- share of the completion's characters that are ``char``
  (default ``"e"``), in [0, 1]. A tiny random model learns to raise it within a few
  dozen PPO/GRPO steps: the demo and test reward.
* ``length_target`` -- ``-|len - target| / target`` with ``len`` in characters
  (``unit="chars"``, default) or whitespace-separated words; 0 is best.
* ``distinct_words`` -- share of distinct words among the completion's words (1 = no
  repetition; 0 for an empty completion).
* ``lexicon`` -- occurrences of words from ``words`` (default: a small list of
  friendly words) per word of the completion, in [0, 1]; a cheap "be positive" reward
  for demos with real models.

Verifiable rewards (``exact_match``, ``numeric_match``, ``math_verify``: the completion's final
answer against the prompt's ``reference``) are in :mod:`alignkit.plugins.rewards.verifiable`.
"""
from __future__ import annotations

import re
from typing import Sequence

from alignkit import hookimpl
from .verifiable import exact_match, math_verify, numeric_match

_WORD = re.compile(r"[A-Za-z']+")
FRIENDLY = ("thank", "thanks", "glad", "happy", "great", "good", "love", "wonderful", "kind", "please",
            "welcome", "nice", "helpful", "enjoy", "excellent")


def char_frequency(prompts: Sequence, completions: Sequence[str], *, char: str = "e") -> list[float]:
    """Fraction of characters equal to ``char`` (case-insensitive); 0 for an empty completion."""
    c = char.lower()
    return [(s.lower().count(c) / len(s)) if s else 0.0 for s in completions]


def length_target(prompts: Sequence, completions: Sequence[str], *, target: int = 50,
                  unit: str = "chars") -> list[float]:
    """``-|len - target| / target``; ``unit`` is ``chars`` or ``words``."""
    if unit not in ("chars", "words"):
        raise ValueError(f"length_target: unit must be 'chars' or 'words', got {unit!r}")
    lens = [len(s) if unit == "chars" else len(s.split()) for s in completions]
    return [-abs(n - target) / max(target, 1) for n in lens]


def distinct_words(prompts: Sequence, completions: Sequence[str]) -> list[float]:
    """Distinct words / words (lower-cased); 0 for a completion without words."""
    out = []
    for s in completions:
        words = [w.lower() for w in _WORD.findall(s)]
        out.append(len(set(words)) / len(words) if words else 0.0)
    return out


def lexicon(prompts: Sequence, completions: Sequence[str], *,
            words: Sequence[str] = FRIENDLY) -> list[float]:
    """Share of the completion's words that are in ``words`` (case-insensitive, exact match)."""
    vocab = {w.lower() for w in words}
    out = []
    for s in completions:
        toks = [w.lower() for w in _WORD.findall(s)]
        out.append(sum(t in vocab for t in toks) / len(toks) if toks else 0.0)
    return out


@hookimpl
def alignkit_register_reward_functions():
    return {f.__name__: f for f in (char_frequency, length_target, distinct_words, lexicon, exact_match,
                                    numeric_match, math_verify)}
