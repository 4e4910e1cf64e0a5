"""Formats, HH-RLHF's implicit prompt, field mapping, mixing, held-out splits, errors."""
import gzip
import json

import pytest
from omegaconf import OmegaConf

from alignkit.config.schema import DataConfig, DataSource
from alignkit.data.formats import BUILTIN_FORMATS, convert_kind, parse_hh_dialogue
from alignkit.data.load import DataError, load_data, mix

FORMATS = {f.name: f for f in BUILTIN_FORMATS}


def _cfg(*sources, **kw):
    return OmegaConf.structured(DataConfig(name="t", sources=[DataSource(**s) for s in sources], **kw))


def _write(path, rows):
    with (gzip.open(path, "wt") if str(path).endswith(".gz") else open(path, "w")) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_hh_implicit_prompt():
    msgs, resp = parse_hh_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this")
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "how?"}]
    assert resp == "like this"


def test_bundled_hh_loads_with_held_out_split():
    cfg = _cfg({"path": "pkg://alignkit/assets/hh_rlhf/harmless-base-dev.jsonl.gz", "format": "hh", "eval_size": 200})
    data = load_data(cfg, FORMATS, "preference")
    assert len(data.train) == 1600 and len(data.eval) == 200
    ex = data.train[0]
    assert set(ex) == {"prompt", "chosen", "rejected"} and ex["prompt"][-1]["role"] in ("user", "assistant")
    held = {json.dumps(e, sort_keys=True) for e in data.eval}
    assert not any(json.dumps(e, sort_keys=True) in held for e in data.train)


def test_same_split_for_every_kind():
    cfg = _cfg({"path": "pkg://alignkit/assets/hh_rlhf/harmless-base-dev.jsonl.gz", "max_examples": 50,
                "eval_size": 10})
    pref = load_data(cfg, FORMATS, "preference")
    ranked = load_data(cfg, FORMATS, "ranked")
    assert [e["chosen"] for e in pref.eval] == [e["responses"][0] for e in ranked.eval]


def test_field_mapping_and_auto_format(tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"q": "x?", "good": "y", "bad": "z"}] * 10)
    cfg = _cfg({"path": path, "format": "preference", "fields": {"prompt": "q", "chosen": "good", "rejected": "bad"},
                "eval_size": 2})
    data = load_data(cfg, FORMATS, "preference")
    assert data.train[0] == {"prompt": "x?", "chosen": "y", "rejected": "z"}
    path2 = _write(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "u"},
                                                         {"role": "assistant", "content": "a"}]}] * 5)
    data = load_data(_cfg({"path": path2, "eval_size": 1}), FORMATS, "sft")
    assert data.train[0] == {"prompt": [{"role": "user", "content": "u"}], "completion": "a"}


def test_conversational_pairs_and_parquet(tmp_path):
    import datasets

    rows = [{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}] * 4
    path = tmp_path / "c.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    data = load_data(_cfg({"path": str(path), "format": "preference", "eval_size": 1}), FORMATS, "preference")
    assert data.train[0] == {"prompt": [{"role": "user", "content": "q"}], "chosen": "good", "rejected": "bad"}


def test_bad_record_error_names_file_line_and_field(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 3 + [{"prompt": "a", "chosen": "b"}]
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_data(_cfg({"path": path, "format": "preference", "eval_size": 1}), FORMATS, "preference")
    msg = str(e.value)
    assert "bad.jsonl" in msg and "line 4" in msg and "'rejected'" in msg


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_data(_cfg({"path": str(tmp_path / "nope.jsonl")}), FORMATS, "sft")
    path = _write(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}] * 4)
    with pytest.raises(DataError, match="unknown format 'sfft'"):
        load_data(_cfg({"path": path, "format": "sfft"}), FORMATS, "sft")


def test_mixing_weights_and_per_source_held_out(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "completion": "x"} for i in range(100)])
    b = _write(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "completion": "y"} for i in range(100)])
    cfg = _cfg({"path": a, "weight": 3.0, "eval_size": 0.1}, {"path": b, "weight": 1.0, "eval_size": 5})
    data = load_data(cfg, FORMATS, "sft")
    n_a = sum(e["prompt"].startswith("a") for e in data.train)
    assert len(data.train) == 185 and n_a == round(185 * 0.75)
    assert sum(e["prompt"].startswith("a") for e in data.eval) == 10 and len(data.eval) == 15


def test_mix_rejects_bad_weights():
    with pytest.raises(DataError, match="weights"):
        mix([[1], [2]], [1.0, 0.0], 0)


def test_kind_conversions():
    pref = {"prompt": "p", "chosen": "c", "rejected": "r"}
    assert convert_kind(pref, "preference", "sft") == {"prompt": "p", "completion": "c"}
    assert convert_kind(pref, "preference", "ranked")["scores"] == [1.0, 0.0]
    ranked = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.2, 0.9, 0.1]}
    assert convert_kind(ranked, "ranked", "preference") == {"prompt": "p", "chosen": "b", "rejected": "c"}
