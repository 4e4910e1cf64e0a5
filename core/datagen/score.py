"""``alignkit data score`` and ``alignkit data select``: quality selection (Alpagasus, Chen et al. 2023,
arXiv:2307.08701: 9k of Alpaca's 52k, selected by a judge's score, trained a better model than all 52k).

``score`` rates every example of ``input`` (any alignkit data format read as prompt +
response: ``alpaca`` rows from ``self-instruct``, ``sft``, ``messages``; a preference pair's
``chosen``) with a judge on a rubric or a reward model / function
(:mod:`alignkit.datagen.scoring`) and writes the input rows with a ``score`` column
(``judge_answer`` too with a judge). An example without a score (an empty response, a
judge answer that never parsed after ``judge.retries``) is a counted skip, written with its
reason to ``<stem>.skipped.jsonl``. ``<stem>.hist.png`` shows the scores.

``select`` keeps the rows of a scored file with ``score >= threshold``, the ``top_k`` best or
the best ``top_fraction`` (exactly one of the three; rank ties keep input order), in input
order, and plots the histogram with the cut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.io import side_path, to_examples
from alignkit.datagen.scoring import ScoringConfig, build_scorer
from alignkit.datagen.spec import ModelStepConfig, StepConfig
from alignkit.errors import UserError

__all__ = ["ScoreConfig", "SelectConfig", "run_score", "run_select", "select_indices", "plot_histogram"]


@dataclass
class ScoreConfig(ScoringConfig, ModelStepConfig):
    input: str = MISSING  #: examples to score: any alignkit data format with a response (format=auto detects it)
    format: str = "auto"  #: data format of `input` (alignkit list shows them)
    fields: Dict[str, str] = field(default_factory=dict)  #: normalised field -> column name in `input`
    score_field: str = "score"  #: column the score is written to

    def __post_init__(self) -> None:
        ModelStepConfig.__post_init__(self)
        ScoringConfig.__post_init__(self)


@dataclass
class SelectConfig(StepConfig):
    input: str = MISSING  #: a scored file (the output of `alignkit data score`)
    score_field: str = "score"  #: the column to select by
    threshold: Optional[float] = None  #: keep rows scoring >= threshold (Alpagasus: 4.5 of 5)
    top_k: Optional[int] = None  #: or keep the k best rows
    top_fraction: Optional[float] = None  #: or keep the best fraction of rows, in (0, 1]

    def __post_init__(self) -> None:
        check(self, top_k=">= 1", top_fraction="in (0, 1]")


def plot_histogram(scores: Sequence[float], path: Path, title: str, cut: float | None = None) -> Path:
    """A histogram of ``scores`` (one bar per value for a whole-number rubric) with the cut as a line."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(scores, dtype=float)
    whole = bool(np.all(values == np.round(values))) and values.max() - values.min() <= 20
    bins = np.arange(values.min() - 0.5, values.max() + 1.5) if whole else 20
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.hist(values, bins=bins, color="#4878a8", edgecolor="white")
    if cut is not None:
        ax.axvline(cut, color="#c03030", linestyle="--", label=f"cut {cut:g}")
        ax.legend()
    ax.set_xlabel("score")
    ax.set_ylabel("examples")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# -- score ------------------------------------------------------------------------

def run_score(cfg: Any, step: Any) -> None:
    import torch

    rows = step.read(str(cfg.input))
    examples = to_examples(rows, "sft", str(cfg.format), dict(cfg.fields or {}), step.formats(), step.counts)
    if len(examples) != len(rows):  # a message-tree format, or records left out: rows and examples differ
        raise UserError(f"{rows.path}: its format makes {len(examples)} examples of {len(rows)} records, and score "
                        "writes the input records back with their scores",
                        f"convert it first: alignkit data mix sources='[{{path: {rows.path}, format: "
                        f"{cfg.format}}}]' kind=sft output=examples.jsonl, then score examples.jsonl")
    scorer = build_scorer(cfg, step)
    done = int(step.start().get("done", 0))
    judged = cfg.scorer == "judge"
    bar = step.progress(len(examples), done, "example")
    bs = int(cfg.batch_size)
    for start in range(done, len(examples), bs):
        torch.manual_seed(step.seed(start // bs))
        batch = examples[start:start + bs]
        scores = scorer([e["prompt"] for e in batch], [e["completion"] for e in batch]).tolist()
        answers = scorer.answers
        scored, skipped = [], []
        for i, (ex, s, answer) in enumerate(zip(batch, scores, answers)):
            row = dict(rows.rows[start + i])
            if judged:
                row["judge_answer"] = answer
            if s != s:  # NaN: no score
                reason = "empty_response" if not ex["completion"].strip() else "unparsed"
                step.counts[f"skipped_{reason}"] += 1
                skipped.append({**row, "skip_reason": reason, "where": rows.where(start + i)})
            else:
                scored.append({**row, cfg.score_field: s})
        step.counts["scored"] += len(scored)
        step.commit_batch(start + len(batch), {"rows": scored, "skipped": skipped})
        bar.update(len(batch))
    bar.close()
    out, skipped = step.work.rows("rows"), step.work.rows("skipped")
    if skipped:
        step.write(skipped, tag="skipped.jsonl")
    if not out:
        raise UserError(f"score could not score any of {len(examples)} examples "
                        f"(empty responses {step.counts['skipped_empty_response']}, "
                        f"unparsed judge answers {step.counts['skipped_unparsed']}; see "
                        f"{side_path(step.output, 'skipped.jsonl')})",
                        "use an instruct model as judge, raise judge.retries or judge.max_new_tokens, or use "
                        "scorer=reward")
    step.write(out)
    hist = plot_histogram([r[cfg.score_field] for r in out], side_path(step.output, "hist.png"),
                          f"{len(out)} scored, {len(skipped)} skipped")
    step.add_file("histogram", hist)


# -- select -----------------------------------------------------------------------

def select_indices(scores: Sequence[float], threshold: float | None = None, top_k: int | None = None,
                   top_fraction: float | None = None) -> list[int]:
    """Indices (ascending) of the rows kept: ``score >= threshold``, the ``top_k`` best, or the best
    ``floor(top_fraction * N + 1/2)`` (at least 1); rank ties go to the earlier row."""
    if threshold is not None:
        return [i for i, s in enumerate(scores) if s >= threshold]
    k = top_k if top_k is not None else max(1, math.floor(top_fraction * len(scores) + 0.5))
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])


def _scores(rows: Any, name: str) -> list[float]:
    out = []
    for i, r in enumerate(rows.rows):
        v = r.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise UserError(f"{rows.where(i)}: field {name!r} is {v!r}, not a score",
                            "select reads the output of `alignkit data score`, or set score_field=<column>")
        out.append(float(v))
    return out


def run_select(cfg: Any, step: Any) -> None:
    rules = {k: cfg[k] for k in ("threshold", "top_k", "top_fraction") if cfg[k] is not None}
    if len(rules) != 1:
        raise UserError(f"select needs exactly one of threshold, top_k, top_fraction (got {sorted(rules) or 'none'})",
                        "pass one, e.g. threshold=4.5 or top_fraction=0.2")
    rows = step.read(str(cfg.input))
    scores = _scores(rows, str(cfg.score_field))
    keep = select_indices(scores, **rules)
    step.counts.update({"input": len(scores), "kept": len(keep), "dropped": len(scores) - len(keep)})
    if not keep:
        raise UserError(f"select kept none of {len(scores)} rows: threshold {cfg.threshold:g} is above every "
                        f"score (the highest is {max(scores):g})", "lower threshold, or use top_k / top_fraction")
    cut = cfg.threshold if cfg.threshold is not None else min(scores[i] for i in keep)
    step.write([rows.rows[i] for i in keep])
    hist = plot_histogram(scores, side_path(step.output, "hist.png"), f"kept {len(keep)} of {len(scores)}", cut)
    step.add_file("histogram", hist)
