"""``alignkit data mix``: weighted mixtures of sources in one file ("How far can camels go?",
Wang et al. 2023, arXiv:2306.04751: mixing instruction sources beats any single one).

Each source is read, shuffled with ``seed + <its index>`` and cut to ``max_examples``, as
a source of a training data config is. The mixture is then made by the data config's own
weighting (:func:`alignkit.data.load.mix`): as many rows as all sources together, source
``i`` contributing ``weight_i / sum(weights)`` of them (cycling through a source, in its
shuffled order, when its share is larger than the source), shuffled with ``seed``.

With ``kind`` set (``sft``, ``preference``, ``ranked``, ``prompt``), every source is read
through alignkit's data formats and written as normalised examples of that kind, so
sources in different formats mix into one trainable file; without it, rows are written
as they are. ``source_field`` names each row's source file. Per-source counts (rows
read, rows in the mixture) are in the provenance record.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.io import to_examples
from alignkit.datagen.spec import StepConfig
from alignkit.errors import UserError

__all__ = ["MixConfig", "MixSource", "run_mix"]


@dataclass
class MixSource:
    path: str = MISSING  #: a .jsonl/.json/.parquet file
    weight: float = 1.0  #: share of the mixture relative to the other sources
    format: str = "auto"  #: data format, used with `kind`
    fields: Dict[str, str] = field(default_factory=dict)  #: normalised field -> column name, used with `kind`
    max_examples: Optional[int] = None  #: keep the first N rows (after the seeded shuffle)

    def __post_init__(self) -> None:
        check(self, weight="> 0", max_examples=">= 1")


@dataclass
class MixConfig(StepConfig):
    #: sources='[{path: a.jsonl, weight: 2}, {path: b.jsonl}]'
    sources: List[MixSource] = field(default_factory=list)
    seed: int = 0  #: seeds the shuffles (each source's, then the mixture's)
    kind: Optional[str] = None  #: sft | preference | ranked | prompt: write normalised examples of this kind
    source_field: Optional[str] = "source"  #: column holding each row's source path (null: none)

    def __post_init__(self) -> None:
        check(self, kind="one of sft|preference|ranked|prompt")


def run_mix(cfg: Any, step: Any) -> None:
    from alignkit.data.load import mix

    if not cfg.sources:
        raise UserError("mix needs at least one source", "pass sources='[{path: a.jsonl, weight: 2}, {path: b.jsonl}]'")
    parts = []
    for j, src in enumerate(cfg.sources):
        rows = step.read(str(src.path), key=f"sources.{j}.path")
        items = (to_examples(rows, str(cfg.kind), str(src.format), dict(src.fields or {}), step.formats(),
                             step.counts)
                 if cfg.kind else [dict(r) for r in rows.rows])
        random.Random(int(cfg.seed) + j).shuffle(items)
        items = items[: src.max_examples] if src.max_examples is not None else items
        for it in items:
            it["_source"] = j
            if cfg.source_field:
                it[str(cfg.source_field)] = str(src.path)
        step.counts[f"sources.{j}.read"] = len(items)
        parts.append(items)
    mixed = mix(parts, [float(s.weight) for s in cfg.sources], int(cfg.seed))
    for r in mixed:
        step.counts[f"sources.{r['_source']}.mixed"] += 1
    step.counts["rows"] = len(mixed)
    step.write(mixed)
