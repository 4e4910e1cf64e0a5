"""Chain-of-thought in self-instruct, pairs and sdf: the final answer extracted by hand-made examples,
and the steps on scripted generations (the tiny model never writes an answer line)."""
from types import SimpleNamespace

import pytest

from alignkit.datagen.cot import cot_prompt, extract_answer
from alignkit.datagen.templates import COT_SUFFIX

from datagen_helpers import SEEDS, read_jsonl, write_jsonl


@pytest.mark.parametrize("text, expected", [
    ("We add 2 and 3.\nAnswer: 5", ("We add 2 and 3.", "5")),
    ("Step 1: count.\n**Final answer:** 42 apples.", ("Step 1: count.", "42 apples")),
    ("Half of one is\n\\boxed{\\frac{1}{2}}", ("Half of one is", "\\frac{1}{2}")),
    ("Paris is the capital.\nThe final answer is Paris", ("Paris is the capital.", "Paris")),
    ("Answer: 1\nWait, recount.\n## Answer: 2", ("Answer: 1\nWait, recount.", "2")),  # the last line counts
    ("Answering needs care.\nAnswer is: 3", ("Answering needs care.", "3")),  # 'Answering' is no label
    ("It is probably 7", ("It is probably 7", None)),  # never guessed from a number
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_cot_prompt_appends_to_the_last_user_turn():
    assert cot_prompt("Add 2 and 3.", "!") == "Add 2 and 3.!"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Add 2 and 3."}]
    assert cot_prompt(chat, "!")[-1] == {"role": "user", "content": "Add 2 and 3.!"}
    assert chat[-1]["content"] == "Add 2 and 3."  # the input is not changed


def _scripted(monkeypatch, answer):
    """generate_from_prompts returning ``answer(prompt, i)`` for sample i of each prompt."""
    import alignkit.rollout.generation as generation

    def fake(model, tok, prompts, data_cfg, num_samples=1, **kw):
        out = [answer(p, i) for p in prompts for i in range(num_samples)]
        return SimpleNamespace(completions=out, has_eos=[True] * len(out))

    monkeypatch.setattr(generation, "generate_from_prompts", fake)


SAMPLES = ["Two and two make four.\nAnswer: 4", "Guessing.\nAnswer: 5 eeeeeeee", "I am not sure."]


def test_pairs_with_chain_of_thought(run_step, tmp_path, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 2 + 2?"}])
    seen = []
    _scripted(monkeypatch, lambda p, i: seen.append(p) or SAMPLES[i])
    step = run_step("pairs", f"input={prompts}", f"output={tmp_path / 'pairs.jsonl'}", "scorer=reward",
                    "reward.function=char_frequency", "num_samples=3", "chain_of_thought=true",
                    f"ranked_output={tmp_path / 'ranked.jsonl'}")
    assert seen[0] == "What is 2 + 2?" + COT_SUFFIX
    [pair] = read_jsonl(tmp_path / "pairs.jsonl")
    assert pair["prompt"] == "What is 2 + 2?" + COT_SUFFIX  # the prompt the responses answer
    assert (pair["chosen"], pair["chosen_answer"], pair["rejected"], pair["rejected_answer"]) == (
        SAMPLES[1], "5 eeeeeeee", SAMPLES[0], "4")  # char_frequency('e') ranks the e's first
    [listed] = read_jsonl(tmp_path / "ranked.jsonl")
    assert listed["answers"] == ["5 eeeeeeee", "4"]
    assert step.counts["no_final_answer"] == 1  # "I am not sure." has no answer line


def test_sdf_with_chain_of_thought(run_step, tmp_path, monkeypatch):
    chats = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "What is 2 + 2?"},
                                                             {"role": "assistant", "content": "4"}]}])
    _scripted(monkeypatch, lambda p, i: SAMPLES[i])
    run_step("sdf", f"input={chats}", f"output={tmp_path / 'best.jsonl'}", "scorer=reward",
             "reward.function=char_frequency", "num_samples=3", "chain_of_thought=true",
             f"preference_output={tmp_path / 'pref.jsonl'}")
    [best] = read_jsonl(tmp_path / "best.jsonl")
    assert best["prompt"] == [{"role": "user", "content": "What is 2 + 2?" + COT_SUFFIX}]
    assert (best["completion"], best["answer"]) == (SAMPLES[1], "5 eeeeeeee")
    assert read_jsonl(tmp_path / "pref.jsonl")[0]["rejected_answer"] == "4"


def test_self_instruct_with_chain_of_thought(run_step, tmp_path, monkeypatch):
    tasks = iter(["Compute the sum of seventeen and twenty five", "Count the vowels in the word banana",
                  "Convert ninety minutes into hours", "Multiply twelve by eleven without a calculator"])
    answers = {"seventeen": "17 + 25 = 42.\nAnswer: 42", "vowels": "a, a, a.\nAnswer: 3",
               "ninety": "It is one and a half hours.", "twelve": "12 * 11 = 132.\n**Answer:** 132"}

    def answer(prompt, i):
        if prompt.endswith(COT_SUFFIX):
            return next(v for k, v in answers.items() if k in prompt)
        return next(tasks, "")

    _scripted(monkeypatch, answer)
    step = run_step("self-instruct", f"input={SEEDS}", f"output={tmp_path / 't.jsonl'}", "target=3",
                    "batch_size=4", "max_rounds=1", "chain_of_thought=true")
    rows = read_jsonl(tmp_path / "t.jsonl")
    assert [(r["instruction"], r["reasoning"], r["answer"]) for r in rows] == [
        ("Compute the sum of seventeen and twenty five", "17 + 25 = 42.", "42"),
        ("Count the vowels in the word banana", "a, a, a.", "3"),
    ]
    assert rows[0]["output"] == "17 + 25 = 42.\nAnswer: 42"  # the whole response stays the SFT target
    # the third task has no answer line; the fourth proposal found no room (target=3)
    assert step.counts["rejected_no_final_answer"] == 1 and step.counts["unused"] == 1
