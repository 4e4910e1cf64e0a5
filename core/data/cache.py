"""Tokenised features cached on disk as ``datasets`` Arrow tables, keyed by content.

:func:`tokenize_cached` tokenises normalised examples with ``datasets.Dataset.map`` (in
``num_proc`` worker processes), keeps the result under ``$ALIGNKIT_CACHE/features/<key>/``
and memory-maps it on later runs, so a large data set is tokenised once and the next run
(and every process of a data-parallel run) starts from the cache. The key covers the
examples themselves (their JSON), the kind, the tokenizer (vocabulary, special tokens,
chat template), the length and truncation settings and the cache format: any change gives a
new entry, so a stale cache cannot be read.

Rows are read back as dicts of Python lists (``dataset[i]``), as the collators expect.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

from alignkit.data.tokenize import reset_stats, tokenize_example

__all__ = ["features_cache_dir", "tokenize_cached", "CACHED_KINDS", "run_data_key", "load_run_data", "save_run_data"]

CACHE_FORMAT = 1
#: kinds whose features are cached (``prompt`` features keep the raw prompt object and stay in memory)
CACHED_KINDS = ("sft", "preference", "ranked")


def features_cache_dir() -> Path:
    """``$ALIGNKIT_CACHE/features`` (default ``~/.cache/alignkit/features``)."""
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit")) / "features"


def _features(kind: str):
    from datasets import Features, Sequence, Value

    ids = Sequence(Value("int64"))
    if kind == "sft":
        cols = {"input_ids": ids, "labels": ids}
    elif kind == "preference":
        cols = {"chosen_input_ids": ids, "chosen_labels": ids, "rejected_input_ids": ids, "rejected_labels": ids,
                "margin": Value("float64")}
    else:  # ranked
        cols = {"input_ids": Sequence(ids), "labels": Sequence(ids), "scores": Sequence(Value("float64"))}
    return Features({**cols, "_keep": Value("bool"), "_stats": Value("string")})


def _tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)).encode())
    h.update(json.dumps([str(getattr(tokenizer, "chat_template", None)), tokenizer.eos_token, tokenizer.pad_token,
                         tokenizer.bos_token, type(tokenizer).__name__]).encode())
    return h.hexdigest()


def cache_key(examples: list[dict], kind: str, tokenizer, data_cfg) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    settings = {"format": CACHE_FORMAT, "kind": kind, "n": len(examples), "tokenizer": _tokenizer_fingerprint(tokenizer),
                "max_length": int(data_cfg.max_length), "max_prompt_length": int(data_cfg.max_prompt_length),
                "truncation": str(data_cfg.truncation)}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


def _tokenize_batch(batch: dict, kind: str, tokenizer, data_cfg, empty: dict) -> dict:
    """``Dataset.map`` function: one output row per example, with ``_keep`` and its truncation /
    drop counts in ``_stats`` (worker processes cannot add to the parent's counters)."""
    out: dict[str, list] = {k: [] for k in empty}
    out["_keep"], out["_stats"] = [], []
    for text in batch["example"]:
        reset_stats()
        feat = tokenize_example(json.loads(text), kind, tokenizer, data_cfg)
        out["_stats"].append(json.dumps(dict(reset_stats())))
        out["_keep"].append(feat is not None)
        for k, default in empty.items():
            out[k].append(feat[k] if feat is not None else default)
    return out


def tokenize_cached(examples: list[dict], kind: str, tokenizer, data_cfg, num_proc: int | None = None):
    """``(dataset of kept features, Counter of truncations and drops)`` for ``examples`` of ``kind``,
    from the cache when it holds them. Safe to call from several processes at once: a finished
    entry is renamed into place whole."""
    import datasets

    if not examples:
        return [], Counter()
    root = features_cache_dir()
    path = root / cache_key(examples, kind, tokenizer, data_cfg)
    return _build(path, examples, kind, tokenizer, data_cfg, num_proc)


def _build(path: Path, examples, kind, tokenizer, data_cfg, num_proc):
    import datasets

    root = path.parent
    if not (path / "stats.json").is_file():
        empty = {"sft": {"input_ids": [], "labels": []},
                 "preference": {"chosen_input_ids": [], "chosen_labels": [], "rejected_input_ids": [],
                                "rejected_labels": [], "margin": 0.0},
                 "ranked": {"input_ids": [], "labels": [], "scores": []}}[kind]
        raw = datasets.Dataset.from_dict({"example": [json.dumps(ex, ensure_ascii=False) for ex in examples]})
        procs = num_proc if num_proc and len(examples) >= 2000 else None
        mapped = raw.map(_tokenize_batch, batched=True, batch_size=256, num_proc=procs, remove_columns=["example"],
                         features=_features(kind), desc=f"tokenising {kind} data",
                         fn_kwargs={"kind": kind, "tokenizer": tokenizer, "data_cfg": data_cfg, "empty": empty},
                         keep_in_memory=True)
        stats: Counter = Counter()
        for s in mapped["_stats"]:
            stats.update(json.loads(s))
        kept = mapped.filter(lambda keep: keep, input_columns=["_keep"], keep_in_memory=True)
        kept = kept.remove_columns(["_keep", "_stats"])
        tmp = root / f"{path.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        kept.save_to_disk(str(tmp))
        (tmp / "stats.json").write_text(json.dumps(dict(stats)))
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    stats = Counter(json.loads((path / "stats.json").read_text()))
    return datasets.load_from_disk(str(path)), stats


# -- a whole run's data ---------------------------------------------------------------------------
def run_data_key(data_cfg, kinds: dict, tokenizer, extra: dict) -> str | None:
    """Key of a run's tokenised data (every split) from what determines it without reading the
    records: the data config, each source file's content hash, the kinds, the tokenizer, the
    formats and ``extra`` (e.g. ``max_eval_examples``). ``None`` when a source is not a local file
    (hub data sets are read each run)."""
    from omegaconf import OmegaConf

    import alignkit
    from alignkit.data.load import content_hash, resolve_path

    files = []
    for src in data_cfg.sources:
        path = Path(resolve_path(src.path))
        if not path.is_file():
            return None
        files.append(content_hash(path))
    settings = {"format": CACHE_FORMAT, "version": alignkit.__version__, "files": files, "kinds": kinds,
                "data": OmegaConf.to_container(data_cfg, resolve=True), "tokenizer": _tokenizer_fingerprint(tokenizer),
                **extra}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _run_file(key: str) -> Path:
    return features_cache_dir() / "runs" / f"{key}.json"


def load_run_data(key: str):
    """``({split: dataset}, {split: stats})`` of a run's data cached under ``key``, or ``None``."""
    import datasets

    f = _run_file(key)
    if not f.is_file():
        return None
    entry = json.loads(f.read_text())
    parts = {}
    for split, name in entry["splits"].items():
        folder = features_cache_dir() / name
        if name and not (folder / "stats.json").is_file():
            return None  # a split's features were removed: rebuild
        parts[split] = datasets.load_from_disk(str(folder)) if name else []
    return parts, entry["stats"]


def save_run_data(key: str, parts: dict, stats: dict) -> None:
    """Record which cached feature tables make up a run's data (written by one process)."""
    splits = {}
    for split, ds in parts.items():
        files = getattr(ds, "cache_files", None) or []
        splits[split] = Path(files[0]["filename"]).parent.name if files else ""
    f = _run_file(key)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"splits": splits, "stats": stats}))
    tmp.rename(f)
