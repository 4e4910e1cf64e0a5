"""Load data sources through ``datasets``, normalise, split held-out parts, mix.

Each source of a data config is read (local json/jsonl/parquet, optionally gzip,
``pkg://alignkit/<path>`` for files shipped in the package, or a hub data set
name when online), converted record by record by its format, shuffled with the
data seed, cut to ``max_examples``, and split into train and held-out parts
(``eval_size``). Train parts are mixed by weight; held-out parts are
concatenated. Bad records raise an error naming the file, line and field.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from alignkit.data.formats import FormatError, convert_kind, detect_format

log = logging.getLogger(__name__)

PKG_PREFIX = "pkg://alignkit/"
_EXT = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ValueError):
    """Bad data: names the file, the line (1-based) and the field."""


@dataclass
class LoadedData:
    train: list[dict]
    eval: list[dict]
    kind: str  #: kind of the examples (after conversion)


def resolve_path(path: str) -> str:
    """Turn ``pkg://alignkit/...`` into a file path inside the installed package."""
    if path.startswith(PKG_PREFIX):
        return str(Path(__file__).resolve().parent.parent / path[len(PKG_PREFIX):])
    return path


def _read_records(path: str, split: str) -> tuple[list[dict], str]:
    """Records of one source and a description for error messages."""
    import datasets

    local = resolve_path(path)
    p = Path(local)
    suffixes = [s for s in p.suffixes if s != ".gz"]
    if p.exists() or path.startswith(PKG_PREFIX) or local.startswith(("/", ".")):
        if not p.exists():
            raise DataError(f"data file not found: {local}")
        builder = _EXT.get(suffixes[-1] if suffixes else "")
        if builder is None:
            raise DataError(f"{local}: unsupported file type; use .json, .jsonl, .parquet or .csv (optionally .gz)")
        try:
            ds = datasets.load_dataset(builder, data_files=str(p), split="train")
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise DataError(f"{local}: could not be read as {builder}: {exc}") from exc
        return ds.to_list(), local
    ds = datasets.load_dataset(path, split=split)  # hub name (offline cache or online)
    return ds.to_list(), f"{path}[{split}]"


def _where(desc: str, i: int) -> str:
    return f"{desc}, line {i + 1}" if desc.endswith((".jsonl", ".jsonl.gz")) else f"{desc}, record {i}"


def load_source(src, formats: dict, want_kind: str, seed: int) -> tuple[list[dict], list[dict]]:
    """Read, normalise, convert to ``want_kind``, shuffle, cut and split one source."""
    records, desc = _read_records(src.path, src.split)
    if not records:
        raise DataError(f"{desc}: no records")
    fields = dict(src.fields or {})
    if src.format == "auto":
        spec = detect_format(list(records[0].keys()), fields, formats)
    elif src.format in formats:
        spec = formats[src.format]
    else:
        raise DataError(f"{desc}: unknown format {src.format!r}; available: {', '.join(sorted(formats))}, auto")
    examples = []
    for i, rec in enumerate(records):
        try:
            ex = convert_kind(spec.convert(rec, fields), spec.kind, want_kind)
        except FormatError as exc:
            raise DataError(f"{_where(desc, i)} (format {spec.name!r}): {exc}") from exc
        examples.append(ex)
    random.Random(seed).shuffle(examples)
    if src.max_examples is not None:
        examples = examples[: src.max_examples]
    n_eval = int(round(src.eval_size * len(examples))) if src.eval_size < 1 else int(src.eval_size)
    if n_eval >= len(examples):
        raise DataError(f"{desc}: eval_size={src.eval_size} leaves no training examples out of {len(examples)}")
    log.info("%s: %d examples (%s -> %s), %d held out", desc, len(examples), spec.name, want_kind, n_eval)
    return examples[n_eval:], examples[:n_eval]


def mix(parts: list[list[dict]], weights: list[float], seed: int) -> list[dict]:
    """Mix training parts by weight: the mixture has as many examples as all parts
    together, each source contributing ``weight / sum(weights)`` of them (cycling
    through a source, in shuffled order, when its share exceeds its size)."""
    if len(parts) == 1:
        return list(parts[0])
    if any(w <= 0 for w in weights):
        raise DataError(f"source weights must be > 0, got {weights}")
    total, wsum = sum(len(p) for p in parts), sum(weights)
    rng = random.Random(seed)
    out: list[dict] = []
    for part, w in zip(parts, weights):
        share = int(round(total * w / wsum))
        out += [part[i % len(part)] for i in range(share)]
    rng.shuffle(out)
    return out


def load_data(data_cfg, formats: dict, want_kind: str) -> LoadedData:
    """All sources of ``data_cfg`` as examples of ``want_kind``."""
    if not data_cfg.sources:
        raise DataError(f"data config {data_cfg.name!r} has no sources")
    trains, evals = [], []
    for j, src in enumerate(data_cfg.sources):
        tr, ev = load_source(src, formats, want_kind, data_cfg.shuffle_seed + j)
        trains.append(tr)
        evals.append(ev)
    return LoadedData(mix(trains, [s.weight for s in data_cfg.sources], data_cfg.shuffle_seed),
                      [e for ev in evals for e in ev], want_kind)
