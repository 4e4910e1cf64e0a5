"""``alignkit data dedup``: exact and near-duplicate removal, within and across files.

Rows of ``inputs`` are visited in order (files in the order given, rows in file order);
the first of a group of duplicates is kept. A row's text is its ``fields`` that it has
(``instruction``, ``input``, ``prompt`` by default; chat messages as ``role: content``
lines), joined by newlines.

* exact (``exact=true``): the same lower-cased alphanumeric words (case, punctuation and
  spacing do not count);
* near (``near=true``): Jaccard similarity of the two texts' word ``ngram`` sets
  ``>= threshold``. Candidates come from ``datasketch``'s MinHash LSH (``num_perm``
  permutations) and each is confirmed with the exact Jaccard of the n-gram sets, so
  a pair is removed only when its true similarity reaches the threshold (LSH may miss a
  pair close to it).

Kept rows go to ``output`` unchanged; ``<stem>.removed.jsonl`` lists every removed row
(where it was, the row it duplicates, exact or near, the similarity and its text).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.io import as_text
from alignkit.datagen.similarity import jaccard, require, shingles, words
from alignkit.datagen.spec import StepConfig
from alignkit.errors import UserError

__all__ = ["DedupConfig", "run_dedup", "Deduplicator", "row_text"]


@dataclass
class DedupConfig(StepConfig):
    inputs: List[str] = MISSING  #: files to deduplicate, together: inputs=[a.jsonl,b.jsonl]
    fields: List[str] = field(default_factory=lambda: ["instruction", "input", "prompt"])  #: the text compared
    exact: bool = True  #: remove rows with the same words (case and punctuation aside)
    near: bool = True  #: remove rows whose word n-gram sets are similar
    threshold: float = 0.8  #: Jaccard similarity at or above which two rows are near-duplicates
    ngram: int = 3  #: words per shingle (short texts: one shingle of all their words)
    num_perm: int = 128  #: MinHash permutations (more: fewer missed pairs, slower)

    def __post_init__(self) -> None:
        check(self, threshold="in (0, 1]", ngram=">= 1", num_perm=">= 16")


def row_text(row: dict, fields: list[str]) -> str | None:
    """The row's text to compare, or None when it has none of ``fields``."""
    parts = [as_text(row[f]) for f in fields if row.get(f) not in (None, "")]
    return "\n".join(parts) if parts else None


class Deduplicator:
    """Decides, row by row, whether a text duplicates one seen before (see the module docstring)."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.exact: dict[str, str] = {}  #: normalised text -> where it was first seen
        self.sets: dict[str, set] = {}  #: where -> n-gram set of kept texts
        self.lsh = None
        if cfg.near:
            datasketch = require("datasketch", "datasketch", "dedup")
            self.lsh = datasketch.MinHashLSH(threshold=float(cfg.threshold), num_perm=int(cfg.num_perm))
            self._minhash = datasketch.MinHash

    def check(self, text: str, where: str) -> tuple[str, str, float] | None:
        """``(match, duplicate_of, similarity)`` when ``text`` duplicates a kept one, else None
        (and ``text`` becomes a kept one)."""
        norm = " ".join(words(text))
        if self.cfg.exact and norm in self.exact:
            return "exact", self.exact[norm], 1.0
        grams = shingles(text, int(self.cfg.ngram))
        mh = None
        if self.lsh is not None and grams:
            mh = self._minhash(num_perm=int(self.cfg.num_perm), seed=1)
            mh.update_batch([" ".join(g).encode() for g in sorted(grams)])
            best = max(((jaccard(grams, self.sets[k]), k) for k in self.lsh.query(mh)), default=(0.0, ""))
            if best[0] >= self.cfg.threshold:
                return "near", best[1], round(best[0], 4)
        self.exact.setdefault(norm, where)
        if mh is not None:
            self.sets[where] = grams
            self.lsh.insert(where, mh)
        return None


def run_dedup(cfg: Any, step: Any) -> None:
    if not cfg.inputs:
        raise UserError("dedup needs at least one input file", "pass inputs=[a.jsonl] or inputs=[a.jsonl,b.jsonl]")
    fields = list(cfg.fields)
    dedup = Deduplicator(cfg)
    kept, removed = [], []
    for j, path in enumerate(cfg.inputs):
        rows = step.read(str(path), key=f"inputs.{j}")
        bar = step.progress(len(rows), 0, "row")
        for i, row in enumerate(rows.rows):
            where = rows.where(i)
            text = row_text(row, fields)
            if text is None:
                raise UserError(f"{where}: none of the fields {fields} to compare",
                                f"set fields=[<column>, ...] to the text columns of {rows.key}")
            found = dedup.check(text, where)
            if found is None:
                kept.append(row)
                step.counts[f"inputs.{j}.kept"] += 1
            else:
                match, first, similarity = found
                removed.append({"where": where, "duplicate_of": first, "match": match, "similarity": similarity,
                                "text": text})
                step.counts[f"{match}_duplicates"] += 1
                step.counts[f"inputs.{j}.removed"] += 1
            bar.update(1)
        bar.close()
    step.counts.update({"input": len(kept) + len(removed), "kept": len(kept)})
    step.write(kept)
    if removed:
        step.write(removed, tag="removed.jsonl")
