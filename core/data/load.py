"""Load data sources through ``datasets``, normalise, split held-out parts, mix.

Each source of a data config is read (local json/jsonl/parquet/csv, optionally
gzip, ``pkg://alignkit/<path>`` for files shipped in the package, or a hub data
set name), converted record by record by its format, shuffled with the
data seed, cut to ``max_examples``, and split into train and held-out parts
(``eval_size``; a source with ``eval_only: true`` is held out whole). Train
parts are mixed by weight; held-out parts are concatenated.

A path with a data-file suffix, ``pkg://``, or one that can only be local
(absolute, ``./``, ``../``, ``~``) is always a local file: when it is missing the
error says so, it is never looked up on the hub. Local files are cached by
``datasets`` under a hash of their content. Every error is a :class:`DataError`,
one line ``<what went wrong>; <how to fix it>`` naming the file, the line (JSON
lines, 1-based) or record, and the field.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alignkit.data.formats import FormatError, RecordError, SkipRecord, convert_kind, detect_format
from alignkit.errors import UserError

log = logging.getLogger(__name__)

PKG_PREFIX = "pkg://alignkit/"
_EXT = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_SUPPORTED = ".json, .jsonl, .parquet or .csv (optionally .gz)"
_DATA_SUFFIX = re.compile(r"\.(jsonl?|parquet|csv)(\.gz)?$", re.IGNORECASE)
_LOCAL_PREFIXES = ("/", "./", "../", "~")
_TRUE = ("1", "on", "yes", "true")


class DataError(UserError, ValueError):
    """Bad data: one line naming the file, the line (1-based) and the field, then how to fix it."""


@dataclass
class LoadedData:
    train: list[dict]
    eval: list[dict]
    kind: str  #: kind of the examples (after conversion)
    skipped: dict | None = None  #: ``data.sources[i]`` -> {reason: records its format left out}, sources with any
    languages: dict | None = None  #: ``data.sources[i]`` -> {language: records}, sources with a ``language`` column


@dataclass
class _Records:
    """The raw records of one source."""
    rows: list[dict]
    desc: str  #: the file or ``name[split]`` in messages
    file: Path | None  #: the local file, None for a hub data set


# -- paths -------------------------------------------------------------------

def hub_offline(*names: str) -> str | None:
    """The first of the environment variables ``names`` that is set to a true value
    (``HF_HUB_OFFLINE=1`` and the like), None when none is."""
    return next((n for n in names if os.environ.get(n, "").strip().lower() in _TRUE), None)


def looks_like_local_path(path: str) -> bool:
    """Whether ``path`` can only mean a local path: absolute, ``./``, ``../``, ``~``,
    or more separators than a hub name (``namespace/name``) has."""
    return (path.startswith(_LOCAL_PREFIXES) or os.path.isabs(path) or path in (".", "..")
            or path.count("/") > 1 or (os.sep != "/" and os.sep in path))


def resolved_from(path: str, local: str) -> str:
    """How a path was resolved, for "not found" messages."""
    if local != path:
        return f" (looked for {local})"
    return "" if os.path.isabs(path) else f" (resolved from {os.getcwd()})"


def resolve_path(path: str) -> str:
    """Turn ``pkg://alignkit/...`` into a file path inside the installed package; expand ``~``."""
    if path.startswith(PKG_PREFIX):
        return str(Path(__file__).resolve().parent.parent / path[len(PKG_PREFIX):])
    return os.path.expanduser(path)


def _is_local_data_path(path: str) -> bool:
    """A path that must name a local file: a data-file suffix, ``pkg://`` or a local-looking path."""
    return path.startswith(PKG_PREFIX) or bool(_DATA_SUFFIX.search(path)) or looks_like_local_path(path)


def _source_key(index: int) -> str:
    return f"data.sources[{index}]"


# -- file contents -------------------------------------------------------------

def content_hash(file: Path) -> str:
    """sha256 of the file's bytes (first 16 hex digits), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _cache_dir(file: Path) -> str:
    """The ``datasets`` cache for this file's content: ``datasets`` keys local files by path
    and modification time, so a file rewritten within the same second would be read stale;
    one cache folder per content hash makes the key the content."""
    import datasets

    return str(Path(datasets.config.HF_DATASETS_CACHE) / "alignkit" / content_hash(file))


def _text_lines(file: Path):
    """The file's lines (gzip-aware; undecodable bytes replaced)."""
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt", encoding="utf-8", errors="replace") as f:
        yield from f


def _is_blank(file: Path) -> bool:
    return all(not line.strip() for line in _text_lines(file))


def _is_json_lines(file: Path) -> bool:
    """A ``.jsonl`` file, or a ``.json`` file whose first line is a JSON object by itself."""
    suffixes = [s for s in file.suffixes if s != ".gz"]
    if suffixes and suffixes[-1] == ".jsonl":
        return True
    first = next((line for line in _text_lines(file) if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _first_bad_json(file: Path) -> tuple[int, str] | None:
    """(1-based line, problem) of the first line that is not a JSON object (JSON lines),
    or of the JSON syntax error (one JSON document); None when the JSON is valid."""
    if not _is_json_lines(file):
        try:
            json.loads("".join(_text_lines(file)))
        except json.JSONDecodeError as exc:
            return exc.lineno, f"invalid JSON: {exc.msg} at column {exc.colno}"
        return None
    for n, line in enumerate(_text_lines(file), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return n, f"invalid JSON: {exc.msg} at column {exc.colno}"
        if not isinstance(value, dict):
            return n, f"not a JSON object (a {type(value).__name__})"
    return None


def _record_lines(file: Path) -> list[int]:
    """1-based line number of each record of a JSON-lines file (blank lines hold none)."""
    return [n for n, line in enumerate(_text_lines(file), 1) if line.strip()]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _where(records: _Records, i: int) -> str:
    """The file and line (JSON lines) or record number (1-based) of record ``i``."""
    if records.file is not None and _is_json_lines(records.file):
        return f"{records.desc}, line {_record_lines(records.file)[i]}"
    return f"{records.desc}, record {i + 1}"


# -- reading -------------------------------------------------------------------

def _empty_error(desc: str, what: str, index: int) -> DataError:
    return DataError(f"{desc}: the {what} is empty (no records)", f"add records or remove {_source_key(index)}")


def _read_error(file: Path, builder: str, exc: Exception, index: int) -> DataError:
    """Why ``datasets`` could not read a local file: empty, the first bad JSON line, or its own message."""
    if _is_blank(file):
        return _empty_error(str(file), "file", index)
    if builder == "json":
        bad = _first_bad_json(file)
        if bad is not None:
            line, problem = bad
            return DataError(f"{file}, line {line}: {problem}",
                             "fix or remove that line (each line of a JSON-lines file must be one JSON object)")
    return DataError(f"{file}: could not be read as {builder}: {_one_line(exc)}",
                     "check that the file is valid and that every record has the same fields with the same types")


@contextmanager
def _datasets_quiet():
    """Silence ``datasets``' own log of a read error: the DataError raised instead says it in one line."""
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    ds_logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)


def _read_file(path: str, index: int) -> _Records:
    """Records of a local data file, cached by ``datasets`` under the file's content hash."""
    import datasets

    local = resolve_path(path)
    file = Path(local)
    if not file.exists():
        raise DataError(f"data file not found: {path}{resolved_from(path, local)}",
                        f"check {_source_key(index)}.path (a relative path is read from the folder alignkit runs in)")
    suffixes = [s for s in file.suffixes if s != ".gz"]
    builder = _EXT.get(suffixes[-1].lower() if suffixes else "")
    if file.is_dir() or builder is None:
        raise DataError(f"{local}: not a supported data file", f"give {_source_key(index)}.path a {_SUPPORTED} file")
    try:
        with _datasets_quiet():
            ds = datasets.load_dataset(builder, data_files=str(file), split="train", cache_dir=_cache_dir(file))
    except Exception as exc:  # noqa: BLE001 - re-raised as one line naming the file
        raise _read_error(file, builder, exc, index) from exc
    return _Records(ds.to_list(), local, file)


def _read_hub(path: str, split: str, index: int) -> _Records:
    """Records of a hub data set (from the local cache when offline)."""
    import datasets

    try:
        ds = datasets.load_dataset(path, split=split)
    except Exception as exc:  # noqa: BLE001 - re-raised as one line naming the source
        offline = hub_offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        if offline:
            raise DataError(f"{path}: neither a local file nor a hub data set available offline ({offline} is set)",
                            f"check {_source_key(index)}.path (local files end in {_SUPPORTED}), "
                            f"or unset {offline} to download it") from exc
        raise DataError(f"{path}: not a local file, and loading it from the hub failed: {_one_line(exc)}",
                        f"check {_source_key(index)}.path (local files end in {_SUPPORTED})") from exc
    return _Records(ds.to_list(), f"{path}[{split}]", None)


def _read_records(path: str, split: str, index: int = 0) -> _Records:
    """Records of one source: a local file when the path exists or can only be local, else a hub data set."""
    if Path(resolve_path(path)).exists() or _is_local_data_path(path):
        records = _read_file(path, index)
    else:
        records = _read_hub(path, split, index)
    if not records.rows:
        raise _empty_error(records.desc, "file" if records.file else "data set", index)
    return records


def read_rows(path: str, split: str = "train", index: int = 0) -> list[dict]:
    """The raw records of one source path (a local file or a hub data set), as :func:`load_source` reads them."""
    return _read_records(path, split, index).rows


def _pick_format(src, records: _Records, fields: dict, formats: dict, index: int):
    """The source's format spec (detected from the first record's columns under ``format: auto``)."""
    choices = f"set {_source_key(index)}.format to one of: {', '.join(sorted(formats))}, auto"
    if src.format == "auto":
        try:
            return detect_format(list(records.rows[0].keys()), fields, formats)
        except FormatError as exc:
            raise DataError(f"{records.desc}: {exc}", choices) from exc
    if src.format in formats:
        return formats[src.format]
    raise DataError(f"{records.desc}: unknown format {src.format!r}", choices)


def _convert(records: _Records, spec, fields: dict, want_kind: str, index: int,
             skipped: Counter | None = None) -> list[dict]:
    """Every record as a normalised example of ``want_kind``; the first bad one raises naming its line.
    Records the format leaves out on purpose (:class:`SkipRecord`, or counted by a whole-file format)
    are counted in ``skipped`` by reason."""
    skipped = Counter() if skipped is None else skipped
    key = _source_key(index)
    fix = f"fix that record, map the field with {key}.fields, or set {key}.format"
    if spec.convert_records is not None:
        try:
            made = spec.convert_records(records.rows, fields, skipped)
        except RecordError as exc:
            raise DataError(f"{_where(records, exc.index)}, format {spec.name!r}: {exc}", fix) from exc
        except FormatError as exc:
            raise DataError(f"{records.desc}, format {spec.name!r}: {exc}", fix) from exc
        try:
            return [convert_kind(ex, spec.kind, want_kind) for ex in made]
        except FormatError as exc:
            raise DataError(f"{records.desc}, format {spec.name!r}: {exc}", fix) from exc
    examples = []
    for i, rec in enumerate(records.rows):
        try:
            examples.append(convert_kind(spec.convert(rec, fields), spec.kind, want_kind))
        except SkipRecord as exc:
            skipped[exc.reason] += 1
        except FormatError as exc:
            raise DataError(f"{_where(records, i)}, format {spec.name!r}: {exc}", fix) from exc
    return examples


def load_source(src, formats: dict, want_kind: str, seed: int, index: int = 0, skipped: Counter | None = None,
                languages: Counter | None = None) -> tuple[list[dict], list[dict]]:
    """Read, normalise, convert to ``want_kind``, shuffle, cut and split one source
    (``index``: its place in ``data.sources``, named in error messages); records its format
    leaves out are counted in ``skipped`` by reason, and records by the value of their
    ``language`` column (``fields.language`` maps it: ``lang`` in OpenAssistant files) in ``languages``."""
    records = _read_records(src.path, src.split, index)
    fields = dict(src.fields or {})
    spec = _pick_format(src, records, fields, formats, index)
    skipped = Counter() if skipped is None else skipped
    examples = _convert(records, spec, fields, want_kind, index, skipped)
    if languages is not None:
        col = fields.get("language", "language")
        languages.update(r[col] for r in records.rows if isinstance(r.get(col), str))
    if skipped:
        log.warning("%s: format %s left out %s", records.desc, spec.name,
                    ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(skipped.items())))
    random.Random(seed).shuffle(examples)
    if src.max_examples is not None:
        examples = examples[: src.max_examples]
    if getattr(src, "eval_only", False):
        log.info("%s: %d examples (%s -> %s), all held out (eval_only)", records.desc, len(examples), spec.name,
                 want_kind)
        return [], examples
    n_eval = int(round(src.eval_size * len(examples))) if src.eval_size < 1 else int(src.eval_size)
    if n_eval >= len(examples):
        raise DataError(f"{records.desc}: eval_size={src.eval_size} leaves no training examples out of "
                        f"{len(examples)}", f"lower {_source_key(index)}.eval_size")
    log.info("%s: %d examples (%s -> %s), %d held out", records.desc, len(examples), spec.name, want_kind, n_eval)
    return examples[n_eval:], examples[:n_eval]


def mix(parts: list[list[dict]], weights: list[float], seed: int) -> list[dict]:
    """Mix training parts by weight: the mixture has as many examples as all parts
    together, each source contributing ``weight / sum(weights)`` of them (cycling
    through a source, in shuffled order, when its share exceeds its size)."""
    if len(parts) == 1:
        return list(parts[0])
    if any(w <= 0 for w in weights):
        raise DataError(f"source weights must be > 0, got {weights}", "set every data.sources[i].weight above 0")
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
        raise DataError(f"data config {data_cfg.name!r} has no sources", "add at least one entry to data.sources")
    trains, evals, skipped, languages = [], [], {}, {}
    for j, src in enumerate(data_cfg.sources):
        left_out, langs = Counter(), Counter()
        tr, ev = load_source(src, formats, want_kind, data_cfg.shuffle_seed + j, index=j, skipped=left_out,
                             languages=langs)
        trains.append(tr)
        evals.append(ev)
        if left_out:
            skipped[_source_key(j)] = dict(sorted(left_out.items()))
        if langs:
            languages[_source_key(j)] = dict(sorted(langs.items()))
    trained = [(tr, s.weight) for tr, s in zip(trains, data_cfg.sources) if not getattr(s, "eval_only", False)]
    train = mix([t for t, _ in trained], [w for _, w in trained], data_cfg.shuffle_seed) if trained else []
    return LoadedData(train, [e for ev in evals for e in ev], want_kind, skipped, languages)
