"""Files of the data steps: reading inputs, writing outputs, side files and fingerprints.

Inputs are read by the data loader's reader (:mod:`alignkit.data.load`: local
json/jsonl/parquet/csv, gzip ok, ``pkg://alignkit/...``), so a missing file, an empty
file or a malformed JSON line is the same one-line error naming the file and line.
Outputs are ``datasets``-compatible: ``.jsonl`` (one JSON object a line) or ``.parquet``,
written to a temporary name and renamed, so a half-written output never exists. Side
files sit next to the output and share its stem: ``pairs.jsonl`` ->
``pairs.provenance.json``, ``pairs.skipped.jsonl``, ``pairs.hist.png``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alignkit.data.formats import present_fields
from alignkit.data.load import DataError, _convert, _pick_format, _read_records, _where, content_hash, resolve_path
from alignkit.errors import UserError

__all__ = ["Rows", "read_rows", "to_examples", "write_rows", "side_path", "output_suffix", "require_fields", "as_text",
           "OUTPUT_SUFFIXES"]

OUTPUT_SUFFIXES = (".jsonl", ".parquet")
_DATA_SUFFIX = re.compile(r"\.(jsonl?|parquet|csv)(\.gz)?$", re.IGNORECASE)


@dataclass
class Rows:
    """The records of one input file, with what provenance and error messages need."""

    rows: list[dict]
    path: str  #: as given on the command line
    file: Path  #: the resolved local file
    fingerprint: str  #: sha256 of the file's bytes (16 hex digits)
    key: str  #: the config key that named the file (``input``, ``inputs.1``, ...), for error messages
    records: Any = field(default=None, repr=False)  #: the loader's records (locates lines for messages)

    def where(self, i: int) -> str:
        """``<file>, line N`` (JSON lines) or ``<file>, record N`` for row ``i``."""
        return _where(self.records, i)

    def __len__(self) -> int:
        return len(self.rows)


def _for_step(exc: DataError, key: str) -> UserError:
    """The loader's error with its hint pointing at this step's keys instead of ``data.sources[0]``."""
    return UserError(exc.what, exc.fix.replace("data.sources[0].path", key).replace("data.sources[0].", ""))


def read_rows(path: str, key: str = "input") -> Rows:
    """Every record of a local data file; a :class:`UserError` naming the file (and line) otherwise."""
    try:
        records = _read_records(path, "train")
    except DataError as exc:
        raise _for_step(exc, key) from exc
    if records.file is None:
        raise UserError(f"{key}={path} is not a local file", f"give {key} a .jsonl, .json or .parquet file")
    return Rows(records.rows, path, records.file, content_hash(records.file), key, records)


def to_examples(rows: Rows, kind: str, fmt: str, fields: dict, formats: dict, counts: Any = None) -> list[dict]:
    """Every row as a normalised example of ``kind`` (``sft``, ``prompt``, ...) through alignkit's
    data formats (``fmt`` or ``auto``); the first bad record raises naming its file and line. Records
    the format leaves out are added to ``counts`` as ``skipped_<reason>``."""
    from collections import Counter
    from types import SimpleNamespace

    skipped: Counter = Counter()
    try:
        spec = _pick_format(SimpleNamespace(format=fmt), rows.records, dict(fields), formats, 0)
        examples = _convert(rows.records, spec, dict(fields), kind, 0, skipped)
    except DataError as exc:
        raise _for_step(exc, rows.key) from exc
    if counts is not None:
        for reason, n in skipped.items():
            counts[f"skipped_{reason}"] += n
    return examples


def require_fields(rows: Rows, i: int, fields: Sequence[str]) -> None:
    """Raise naming the file, line and field when row ``i`` lacks one of ``fields`` (None counts as absent)."""
    for name in fields:
        if rows.rows[i].get(name) is None:
            raise UserError(f"{rows.where(i)}: missing field {name!r} (the record has {present_fields(rows.rows[i])})",
                            f"fix that record or give {rows.key} a file whose records have {name!r}")


def output_suffix(path: str, key: str = "output") -> str:
    """``.jsonl`` or ``.parquet``; a :class:`UserError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UserError(f"{key}={path}: outputs are .jsonl or .parquet files",
                        f"give {key} a name ending in .jsonl or .parquet")
    return suffix


def side_path(output: str | Path, tag: str) -> Path:
    """A file next to ``output`` sharing its stem: ``side_path("a/pairs.jsonl", "skipped.jsonl")`` ->
    ``a/pairs.skipped.jsonl``."""
    out = Path(output)
    stem = _DATA_SUFFIX.sub("", out.name) or out.name
    return out.with_name(f"{stem}.{tag}")


def write_rows(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write ``rows`` as JSON lines or parquet (by suffix) through ``datasets``, atomically."""
    import datasets

    path = Path(resolve_path(str(path)))
    suffix = output_suffix(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        ds = datasets.Dataset.from_dict(_table(rows))
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError derive from these
        raise UserError(f"{path.name}: the rows cannot form one table ({' '.join(str(exc).split())[:200]})",
                        "give every row the same fields with the same types (e.g. mix with kind=...)") from exc
    if suffix == ".jsonl":
        ds.to_json(str(tmp), lines=True, force_ascii=False)
    else:
        ds.to_parquet(str(tmp))
    os.replace(tmp, path)
    return path


def _table(rows: Sequence[dict]) -> dict[str, list]:
    """Columns of ``rows``: every key any row has (in order of first appearance; None where a row
    lacks it), private keys (``_...``, a step's bookkeeping) left out."""
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    return {k: [r.get(k) for r in rows] for k in keys}


def file_fingerprint(path: str | Path) -> str:
    return content_hash(Path(path))


def as_text(value: Any) -> str:
    """A prompt or response as plain text: strings as they are, chat messages as ``role: content`` lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                         for m in value)
    return "" if value is None else str(value)
