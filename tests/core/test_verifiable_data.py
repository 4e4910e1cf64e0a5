"""Data for verifiable tasks: the gsm8k format, question/answer files through a field mapping,
eval-only sources, and the bundled arithmetic preset (held-out = exactly its held-out file)."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import alignkit.conf
from alignkit.config.schema import DataConfig, DataSource
from alignkit.data.load import DataError, load_data, resolve_path

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "A farm has 1,150 cows and buys 50 more. How many cows does it have?",
     "answer": "1,150 + 50 = 1,200\n#### 1,200"},
    {"question": "It is 3 degrees and falls by 10. What is the temperature?", "answer": "3 - 10 = -7\n#### -7"},
]


@pytest.fixture(scope="module")
def formats():
    from alignkit.registry import build_registry

    return {name: spec for name, (spec, _) in build_registry().data_formats.items()}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cfg(*sources):
    return OmegaConf.structured(DataConfig(name="t", sources=[DataSource(**s) for s in sources]))


@pytest.mark.parametrize("fmt", ["gsm8k", "auto"])
def test_gsm8k_reference_is_the_final_answer(formats, tmp_path, fmt):
    path = _write(tmp_path / "gsm8k.jsonl", GSM8K)
    data = load_data(_cfg({"path": path, "format": fmt, "eval_size": 0}), formats, "prompt")
    got = sorted((ex["prompt"], ex["reference"]) for ex in data.train)
    assert got == sorted((r["question"], ref) for r, ref in zip(GSM8K, ["72", "1200", "-7"]))


def test_gsm8k_answer_without_final_answer_names_the_line(formats, tmp_path):
    path = _write(tmp_path / "bad.jsonl", GSM8K[:2] + [{"question": "q", "answer": "no final answer here"}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 3, format 'gsm8k': field 'answer' has no final answer "
                                        r"after '####'.*reference: answer"):
        load_data(_cfg({"path": path, "format": "gsm8k", "eval_size": 0}), formats, "prompt")


def test_question_answer_files_through_a_field_mapping(formats, tmp_path):
    from alignkit.plugins.rewards.verifiable import numeric_match

    path = _write(tmp_path / "qa.jsonl", GSM8K)
    src = {"path": path, "format": "prompt", "fields": {"prompt": "question", "reference": "answer"}, "eval_size": 0}
    data = load_data(_cfg(src), formats, "prompt")
    by_question = {ex["prompt"]: ex["reference"] for ex in data.train}
    assert by_question[GSM8K[0]["question"]] == GSM8K[0]["answer"]  # the whole solution
    # the rewards read its final answer by the same rule as a completion's
    refs = [by_question[r["question"]] for r in GSM8K]
    assert numeric_match([""] * 3, ["The answer is 72.", "#### 1200", "It is 7"], references=refs) == [1.0, 1.0, 0.0]


def test_eval_only_source_is_held_out_whole(formats, tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"prompt": f"t{i}", "reference": str(i)} for i in range(10)])
    test = _write(tmp_path / "test.jsonl", [{"prompt": f"e{i}", "reference": str(i)} for i in range(4)])
    data = load_data(_cfg({"path": train, "eval_size": 0}, {"path": test, "eval_only": True, "eval_size": 2,
                                                            "weight": 5.0}), formats, "prompt")
    # eval_size and weight of an eval-only source are not used: 10 train, 4 held out
    assert sorted(ex["prompt"] for ex in data.train) == [f"t{i}" for i in range(10)]
    assert sorted(ex["prompt"] for ex in data.eval) == [f"e{i}" for i in range(4)]
    only = load_data(_cfg({"path": test, "eval_only": True, "max_examples": 3}), formats, "prompt")
    assert only.train == [] and len(only.eval) == 3


def _rows(name):
    with open(resolve_path(f"pkg://alignkit/assets/arithmetic/{name}")) as f:
        return [json.loads(line) for line in f]


def test_arithmetic_preset_holds_out_exactly_its_held_out_file(formats):
    preset = Path(alignkit.conf.__file__).parent / "data" / "arithmetic.yaml"
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(preset))
    data = load_data(cfg, formats, "prompt")
    as_set = lambda rows: {(r["prompt"], r["reference"]) for r in rows}  # noqa: E731
    train_file, test_file = as_set(_rows("train.jsonl")), as_set(_rows("test.jsonl"))
    assert len(data.train) == 2000 and len(data.eval) == 300
    assert as_set(data.train) == train_file and as_set(data.eval) == test_file
    assert not train_file & test_file


def test_arithmetic_preset_composes_with_grpo_and_a_verifiable_reward():
    from alignkit.config.compose import ConfigError, compose_config

    cfg = compose_config(["algo=grpo", "data=arithmetic", "algo.reward.function=numeric_match",
                          "+algo.reward.kwargs.rel_tol=0.01"])
    assert cfg.data.name == "arithmetic" and cfg.data.sources[1].eval_only is True
    with pytest.raises(ConfigError, match="did you mean 'rel_tol'"):
        compose_config(["algo=grpo", "data=arithmetic", "algo.reward.function=numeric_match",
                        "+algo.reward.kwargs.rel_toll=0.01"])
