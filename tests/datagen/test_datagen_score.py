"""score and select: exact scores from a reward function, judge skips, selection rules, errors."""
import json

import pytest

from alignkit.datagen.score import select_indices
from alignkit.errors import UserError

from datagen_helpers import SEEDS, Interrupt, read_jsonl, write_jsonl

ROWS = [  # char_frequency(char="a") of each output: share of its characters that are "a"
    {"instruction": "one", "input": "", "output": "aaaa"},  # 1.0
    {"instruction": "two", "input": "x", "output": "abab"},  # 0.5
    {"instruction": "three", "input": "", "output": "bbbb"},  # 0.0
    {"instruction": "four", "input": "", "output": "  "},  # empty after strip: a counted skip
    {"instruction": "five", "input": "", "output": "aab"},  # 2/3
]


def test_score_with_a_reward_function(run_step, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "scored.jsonl"
    step = run_step("score", f"input={src}", f"output={out}", "scorer=reward", "reward.function=char_frequency",
                    "+reward.kwargs.char=a", "batch_size=2")
    rows = read_jsonl(out)
    assert [r["instruction"] for r in rows] == ["one", "two", "three", "five"]
    assert [r["score"] for r in rows] == pytest.approx([1.0, 0.5, 0.0, 2 / 3])
    assert "judge_answer" not in rows[0]
    assert dict(step.counts) == {"scored": 4, "skipped_empty_response": 1}
    skipped = read_jsonl(tmp_path / "scored.skipped.jsonl")
    assert [(s["instruction"], s["skip_reason"], s["where"]) for s in skipped] == [
        ("four", "empty_response", f"{src}, line 4")]
    assert (tmp_path / "scored.hist.png").stat().st_size > 1000
    prov = json.loads((tmp_path / "scored.provenance.json").read_text())
    assert prov["models"]["reward"] == {"function": "char_frequency", "kwargs": {"char": "a"}}
    assert prov["outputs"]["output"]["rows"] == 4 and prov["outputs"]["skipped"]["rows"] == 1
    assert prov["counts"] == {"scored": 4, "skipped_empty_response": 1}


def test_score_resumes_after_an_interrupt(run_step, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    args = [f"input={src}", "scorer=reward", "reward.function=char_frequency", "+reward.kwargs.char=a", "batch_size=2"]
    Interrupt(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_step("score", *args, f"output={tmp_path / 'o.jsonl'}")
    state = json.loads((tmp_path / "o.partial" / "state.json").read_text())
    assert state["state"]["done"] == 4 and state["lengths"] == {"rows": 3, "skipped": 1}
    monkeypatch.undo()
    step = run_step("score", *args, f"output={tmp_path / 'o.jsonl'}")
    assert step.resumed_from == 4
    assert [r["score"] for r in read_jsonl(tmp_path / "o.jsonl")] == pytest.approx([1.0, 0.5, 0.0, 2 / 3])
    assert dict(step.counts) == {"scored": 4, "skipped_empty_response": 1}


def test_resume_refuses_a_partial_run_of_other_settings(run_step, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    args = [f"input={src}", f"output={tmp_path / 'o.jsonl'}", "scorer=reward", "reward.function=char_frequency",
            "batch_size=2"]
    Interrupt(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        run_step("score", *args)
    monkeypatch.undo()
    with pytest.raises(UserError, match="o.partial holds an interrupted run with other settings.*resume=false"):
        run_step("score", *args, "+reward.kwargs.char=a")
    step = run_step("score", *args, "+reward.kwargs.char=a", "resume=false")
    assert step.resumed_from is None and step.counts["scored"] == 4


def test_tiny_judge_skips_what_does_not_parse(run_step, tmp_path):
    """The random tiny model answers noise: every example is scored or a counted skip with the answer kept."""
    out = tmp_path / "j.jsonl"
    try:
        step = run_step("score", f"input={SEEDS}", f"output={out}", "judge.require_chat_template=false",
                        "judge.retries=1", "judge.max_new_tokens=6")
    except UserError as exc:  # all 16 unparsed: the error says so and points at the skipped file
        assert "could not score any of 16 examples" in str(exc) and "j.skipped.jsonl" in str(exc)
        skipped = read_jsonl(tmp_path / "j.skipped.jsonl")
        assert len(skipped) == 16
        return
    scored = read_jsonl(out)
    skipped = read_jsonl(tmp_path / "j.skipped.jsonl") if step.counts["skipped_unparsed"] else []
    assert len(scored) + len(skipped) == 16 == step.counts["scored"] + step.counts["skipped_unparsed"]
    from alignkit.datagen.judge import parse_score

    assert all(parse_score(r["judge_answer"]) == r["score"] for r in scored)
    assert all(parse_score(s["judge_answer"]) is None and s["skip_reason"] == "unparsed" for s in skipped)


def test_judge_without_chat_template_is_refused_before_any_work(run_step, tmp_path):
    with pytest.raises(UserError, match="judge model 'tiny' has no chat template"):
        run_step("score", f"input={SEEDS}", f"output={tmp_path / 'j.jsonl'}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rule, expected", [
    ({"threshold": 0.5}, [0, 1, 3, 4]),  # >= keeps both 0.5s
    ({"threshold": 1.0}, [0]),
    ({"top_k": 2}, [0, 4]),
    ({"top_k": 3}, [0, 1, 4]),  # 0.5 ties with row 3's 0.5: the earlier row wins
    ({"top_fraction": 0.5}, [0, 1, 4]),  # floor(0.5 * 6 + 0.5) = 3
    ({"top_fraction": 0.1}, [0]),  # floor(0.6 + 0.5) = 1
    ({"top_fraction": 0.01}, [0]),  # at least one
])
def test_select_rules_by_hand(rule, expected):
    scores = [1.0, 0.5, 0.0, 0.5, 0.75, 0.25]
    assert select_indices(scores, **rule) == expected


def test_select_step(run_step, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"id": i, "score": s} for i, s in enumerate([3, 5, 4, 1, 5, 2])])
    step = run_step("select", f"input={src}", f"output={tmp_path / 'k.parquet'}", "threshold=4")
    import datasets

    kept = datasets.load_dataset("parquet", data_files=str(tmp_path / "k.parquet"), split="train").to_list()
    assert [r["id"] for r in kept] == [1, 2, 4]
    assert dict(step.counts) == {"input": 6, "kept": 3, "dropped": 3}
    assert (tmp_path / "k.hist.png").exists() and (tmp_path / "k.provenance.json").exists()


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of threshold, top_k, top_fraction"),
    (["threshold=1", "top_k=2"], "exactly one of threshold, top_k, top_fraction"),
    (["threshold=9"], "kept none of 2 rows: threshold 9 is above every score"),
])
def test_select_errors(run_step, tmp_path, args, message):
    src = write_jsonl(tmp_path / "s.jsonl", [{"score": 1}, {"score": 2}])
    with pytest.raises(UserError, match=message):
        run_step("select", f"input={src}", f"output={tmp_path / 'k.jsonl'}", *args)
    assert not (tmp_path / "k.jsonl").exists()


def test_select_names_the_row_without_a_score(run_step, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"score": 1}, {"score": 2}, {"score": "high"}])
    with pytest.raises(UserError, match=r"s.jsonl, line 3: field 'score' is 'high', not a score"):
        run_step("select", f"input={src}", f"output={tmp_path / 'k.jsonl'}", "top_k=1")


def test_existing_output_needs_overwrite(run_step, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"score": 1}, {"score": 2}])
    (tmp_path / "k.jsonl").write_text("old\n")
    with pytest.raises(UserError, match="k.jsonl already exists; pass overwrite=true"):
        run_step("select", f"input={src}", f"output={tmp_path / 'k.jsonl'}", "top_k=1")
    run_step("select", f"input={src}", f"output={tmp_path / 'k.jsonl'}", "top_k=1", "overwrite=true")
    assert read_jsonl(tmp_path / "k.jsonl") == [{"score": 2}]
