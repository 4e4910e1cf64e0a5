"""Text similarity for the data steps, from well-kept libraries.

* :class:`RougePool`: ROUGE-L F1 (``rouge-score``, the scorer Self-Instruct used) of a
  candidate against every text of a growing pool. ``rouge-score`` lower-cases and keeps
  alphanumeric words only (its ``DefaultTokenizer``), so punctuation and case never matter.
* :func:`shingles` / :func:`jaccard`: word n-gram sets for near-duplicate detection;
  :class:`alignkit.datagen.dedup` finds candidate pairs with ``datasketch``'s MinHash LSH
  and confirms each with the exact Jaccard similarity of these sets.
"""
from __future__ import annotations

import importlib
import re
from typing import Any

from alignkit.errors import UserError

__all__ = ["RougePool", "words", "shingles", "jaccard", "require"]

_WORD = re.compile(r"[a-z0-9]+")


def require(module: str, package: str, step: str) -> Any:
    """Import ``module``; a one-line error naming the package when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"alignkit data {step} needs the {package} package, which is not installed",
                        f"pip install 'alignkit[data]' (or pip install {package})") from exc


class RougePool:
    """The texts seen so far and the highest ROUGE-L F1 of a new text against them."""

    def __init__(self, texts: list[str] = ()):
        rouge_scorer = require("rouge_score.rouge_scorer", "rouge-score", "self-instruct")
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.texts: list[str] = []
        for t in texts:
            self.add(t)

    def add(self, text: str) -> None:
        self.texts.append(text)

    def most_similar(self, text: str) -> tuple[float, int]:
        """``(max ROUGE-L F1, index of that pool text)``; ``(0.0, -1)`` for an empty pool."""
        best, where = 0.0, -1
        for i, other in enumerate(self.texts):
            f1 = self.scorer.score(other, text)["rougeL"].fmeasure
            if f1 > best:
                best, where = f1, i
        return best, where


def words(text: str) -> list[str]:
    """The lower-cased alphanumeric words of ``text``."""
    return _WORD.findall(text.lower())


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word ``n``-grams of ``text`` (:func:`words`); a text shorter than ``n`` words
    is one shingle of all its words; no words, no shingles."""
    ws = words(text)
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """``|a ∩ b| / |a ∪ b|`` (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0
