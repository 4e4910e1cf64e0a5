"""Bad data and model paths: one-line user errors naming file, line and field; the data
cache keyed by content; identical pairs and empty responses dropped and counted."""
import gzip
import json
import os

import pytest
from omegaconf import OmegaConf

from alignkit.config.schema import DataConfig, DataSource, ModelConfig
from alignkit.data.formats import BUILTIN_FORMATS
from alignkit.data.load import DataError, load_data
from alignkit.data.tokenize import STATS, reset_stats, tokenize_example
from alignkit.errors import UserError
from alignkit.models.build import build_tokenizer, resolve_model_path

FORMATS = {f.name: f for f in BUILTIN_FORMATS}
PAIR = {"prompt": "p", "chosen": "good", "rejected": "bad"}
SOURCE_FIX = "check data.sources[0].path (a relative path is read from the folder alignkit runs in)"
JSON_LINE_FIX = "fix or remove that line (each line of a JSON-lines file must be one JSON object)"
EMPTY_FIX = "add records or remove data.sources[0]"
RECORD_FIX = "fix that record, map the field with data.sources[0].fields, or set data.sources[0].format"
HUB_EXAMPLE = "HuggingFaceTB/SmolLM2-135M-Instruct"
CFG = OmegaConf.create({"max_length": 64, "max_prompt_length": 32, "truncation": "truncate"})


def _load(path, fmt="auto", kind="preference"):
    cfg = OmegaConf.structured(DataConfig(name="t", sources=[DataSource(path=str(path), format=fmt, eval_size=1)]))
    return load_data(cfg, FORMATS, kind)


def _write_lines(path, lines):
    with (gzip.open(path, "wt") if str(path).endswith(".gz") else open(path, "w")) as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def _error(exc_type, fn, *args):
    with pytest.raises(exc_type) as e:
        fn(*args)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)
    return str(e.value)


def _model(path):
    return OmegaConf.structured(ModelConfig(name="m", source="hf", path=path))


# -- missing local paths are missing files, never hub look-ups -------------------

@pytest.mark.parametrize("path", ["data/missing.jsonl", "train.jsonl", "pairs.csv.gz", "./pairs", "../up/pairs"])
def test_missing_local_data_path_is_a_missing_file(path, tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("looked up a missing local path"))
    msg = _error(DataError, _load, path)
    assert msg == f"data file not found: {path} (resolved from {tmp_path}); {SOURCE_FIX}"


def test_missing_hub_name_offline_says_neither_local_nor_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = _error(DataError, _load, "nobody-alignkit/no-such-set")
    assert msg == ("nobody-alignkit/no-such-set: neither a local file nor a hub data set available offline "
                   "(HF_HUB_OFFLINE is set); check data.sources[0].path (local files end in .json, .jsonl, "
                   ".parquet or .csv (optionally .gz)), or unset HF_HUB_OFFLINE to download it")


# -- model paths ---------------------------------------------------------------------

def test_missing_model_folder_is_a_user_error_for_model_and_tokenizer():
    fix = f"check model.path: give an existing folder with config.json or a hub name such as {HUB_EXAMPLE}"
    assert _error(UserError, resolve_model_path, _model("/nonexistent")) == f"model folder not found: /nonexistent; {fix}"
    assert _error(UserError, build_tokenizer, _model("/nonexistent")).startswith("model folder not found: /nonexistent;")


def test_model_folder_without_config_json(tmp_path):
    msg = _error(UserError, resolve_model_path, _model(str(tmp_path)))
    assert msg == (f"model folder has no config.json: {tmp_path}; point model.path at a folder written by "
                   "save_pretrained (config.json, weights, tokenizer)")


def test_uncached_hub_model_offline():
    msg = _error(UserError, resolve_model_path, _model("nobody-alignkit/no-such-model"))
    assert msg == ("model.path=nobody-alignkit/no-such-model is not a local folder, and the hub is offline "
                   "(HF_HUB_OFFLINE is set) with no cached copy; download it once online "
                   "(hf download nobody-alignkit/no-such-model), unset HF_HUB_OFFLINE, or set model.path to a "
                   "local folder")


# -- malformed, empty and incomplete files ---------------------------------------------

@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.jsonl.gz"])
def test_malformed_json_line_names_file_and_line(name, tmp_path):
    path = _write_lines(tmp_path / name, [json.dumps(PAIR)] * 2 + ['{"prompt": "p" "chosen": "c"}', json.dumps(PAIR)])
    msg = _error(DataError, _load, path)
    assert msg == f"{path}, line 3: invalid JSON: Expecting ',' delimiter at column 16; {JSON_LINE_FIX}"


@pytest.mark.parametrize("lines", [[], ["", "  "]], ids=["zero-bytes", "blank-lines"])
def test_empty_file_says_empty(lines, tmp_path):
    path = _write_lines(tmp_path / "empty.jsonl", lines)
    assert _error(DataError, _load, path) == f"{path}: the file is empty (no records); {EMPTY_FIX}"


def test_missing_field_is_not_listed_as_present(tmp_path):
    # datasets gives line 4 a 'rejected' of None, since other lines have that column; the blank line holds no record
    lines = [json.dumps(PAIR), "", json.dumps(PAIR), json.dumps({"prompt": "p", "chosen": "c"})]
    path = _write_lines(tmp_path / "pairs.jsonl", lines)
    msg = _error(DataError, _load, path, "preference")
    assert msg == (f"{path}, line 4, format 'preference': missing field 'rejected', the record has "
                   f"['chosen', 'prompt']; {RECORD_FIX}")


# -- the data cache is keyed by content ---------------------------------------------------

def test_cache_sees_new_content_with_same_size_and_mtime(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "sft.jsonl"
    _write_lines(path, [json.dumps({"prompt": f"a{i}", "completion": "x"}) for i in range(4)])
    stamp = os.stat(path)
    first = _load(path, "sft", "sft")
    _write_lines(path, [json.dumps({"prompt": f"b{i}", "completion": "y"}) for i in range(4)])
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert os.stat(path).st_size == stamp.st_size and os.stat(path).st_mtime_ns == stamp.st_mtime_ns
    second = _load(path, "sft", "sft")
    assert {e["completion"] for e in first.train + first.eval} == {"x"}
    assert {e["completion"] for e in second.train + second.eval} == {"y"}
    assert sorted(e["prompt"] for e in second.train + second.eval) == ["b0", "b1", "b2", "b3"]


# -- identical pairs and empty responses are dropped and counted -------------------------

def test_identical_pair_is_dropped_and_counted(tiny_tokenizer):
    reset_stats()
    assert tokenize_example({**PAIR, "rejected": " good \n"}, "preference", tiny_tokenizer, CFG) is None
    assert tokenize_example(PAIR, "preference", tiny_tokenizer, CFG) is not None
    assert reset_stats() == {"identical_pair": 1}


@pytest.mark.parametrize("kind,example", [
    ("sft", {"prompt": "p", "completion": "  "}),
    ("preference", {**PAIR, "chosen": ""}),
    ("preference", {**PAIR, "rejected": "\n"}),
    ("ranked", {"prompt": "p", "responses": ["a", " ", "c"], "scores": [1.0, 0.5, 0.0]}),
], ids=["sft", "chosen", "rejected", "ranked"])
def test_empty_response_is_dropped_and_counted(kind, example, tiny_tokenizer):
    reset_stats()
    assert tokenize_example(example, kind, tiny_tokenizer, CFG) is None
    assert reset_stats() == {"empty_response": 1}
    assert tokenize_example(example, kind, tiny_tokenizer, CFG, drop_unusable=False) is not None
    assert not STATS


def test_prompt_examples_are_never_dropped_as_unusable(tiny_tokenizer):
    reset_stats()
    assert tokenize_example({"prompt": "p", "reference": ""}, "prompt", tiny_tokenizer, CFG) is not None
    assert not reset_stats()
