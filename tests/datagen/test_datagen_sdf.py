"""sdf (self-distillation with feedback): every assistant turn gets k replies ranked by a reward; the best
is the SFT row, best vs worst the preference row; resumable."""
import json

import pytest

from alignkit.datagen.sdf import assistant_turns

from datagen_helpers import Interrupt, read_jsonl, write_jsonl

DIALOGUES = [
    {"messages": [{"role": "user", "content": "How do I cook rice?"},
                  {"role": "assistant", "content": "Simmer it in twice its volume of water."},
                  {"role": "user", "content": "For how long?"},
                  {"role": "assistant", "content": "About eighteen minutes, lid on."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"},
                  {"role": "assistant", "content": "Air scatters blue light more than red light."}]},
    {"messages": [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "Seven."}]},
]
ARGS = ["scorer=reward", "reward.function=char_frequency", "num_samples=3", "generation.max_new_tokens=10",
        "batch_size=2"]


def test_assistant_turns_by_hand():
    ex = {"prompt": DIALOGUES[0]["messages"][:-1], "completion": "About eighteen minutes, lid on."}
    turns = assistant_turns(ex, "all")
    assert [(t, len(ctx), reply) for t, ctx, reply in turns] == [
        (0, 1, "Simmer it in twice its volume of water."), (1, 3, "About eighteen minutes, lid on.")]
    assert turns[1][1] == DIALOGUES[0]["messages"][:3]
    assert assistant_turns(ex, "last") == turns[1:]
    assert assistant_turns({"prompt": "Hi", "completion": "Hello."}, "all") == [
        (0, [{"role": "user", "content": "Hi"}], "Hello.")]


def test_sdf_keeps_the_best_and_pairs_best_with_worst(run_step, registry, tmp_path):
    src = write_jsonl(tmp_path / "chat.jsonl", DIALOGUES)
    out, pref, ranked = tmp_path / "best.jsonl", tmp_path / "pref.jsonl", tmp_path / "ranked.jsonl"
    step = run_step("sdf", f"input={src}", f"output={out}", f"preference_output={pref}", f"ranked_output={ranked}",
                    "include_original=true", *ARGS)
    best, pairs, lists = read_jsonl(out), read_jsonl(pref), read_jsonl(ranked)
    assert [(r["dialogue"], r["turn"]) for r in best] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert best[1]["prompt"] == DIALOGUES[0]["messages"][:3] and best[2]["prompt"] == DIALOGUES[1]["messages"][:2]
    fn = registry.reward_function("char_frequency")
    by_prompt = {json.dumps(r["prompt"]): r for r in lists}
    for row in best:  # the kept reply is the top of its ranked list and has the best reward
        listed = by_prompt[json.dumps(row["prompt"])]
        assert row["completion"] == listed["responses"][0]
        assert row["score"] == pytest.approx(fn([None], [row["completion"]])[0])
        assert row["score"] == max(listed["scores"])
    originals = {m["content"] for d in DIALOGUES for m in d["messages"] if m["role"] == "assistant"}
    assert originals & {r for listed in lists for r in listed["responses"]}  # include_original ranks them too
    for p in pairs:
        listed = by_prompt[json.dumps(p["prompt"])]
        assert (p["chosen"], p["rejected"]) == (listed["responses"][0], listed["responses"][-1])
    c = step.counts
    assert c["dialogues"] == 3 and c["turns"] == 4 and c["best"] == 4 and c["pairs"] == len(pairs)
    assert c["pairs"] + c["turns_without_pair"] == 4
    prov = json.loads((tmp_path / "best.provenance.json").read_text())
    assert set(prov["outputs"]) == {"output", "preference_output", "ranked_output"}
    assert prov["models"]["reward"]["function"] == "char_frequency"


def test_sdf_last_turn_and_resume(run_step, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "chat.jsonl", DIALOGUES)
    step = run_step("sdf", f"input={src}", f"output={tmp_path / 'last.jsonl'}", "turns=last", *ARGS)
    assert [(r["dialogue"], r["turn"]) for r in read_jsonl(tmp_path / "last.jsonl")] == [(0, 1), (1, 0), (2, 0)]
    assert step.counts["turns"] == 3
    run_step("sdf", f"input={src}", f"output={tmp_path / 'whole.jsonl'}", *ARGS)
    Interrupt(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        run_step("sdf", f"input={src}", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    monkeypatch.undo()
    step = run_step("sdf", f"input={src}", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    assert step.resumed_from == 2
    assert read_jsonl(tmp_path / "cut.jsonl") == read_jsonl(tmp_path / "whole.jsonl")


def test_sdf_reads_sharegpt_and_refuses_inputs_without_turns(run_step, tmp_path, monkeypatch):
    from pathlib import Path

    from alignkit.errors import UserError

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "corpora" / "sharegpt.json"
    whole = run_step("sdf", f"input={fixture}", "format=sharegpt", f"output={tmp_path / 's.jsonl'}", *ARGS)
    assert whole.counts["turns"] == 3 and whole.counts["skipped_no_reply"] == 2  # 2 + 1 turns; 2 unanswered
    Interrupt(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        run_step("sdf", f"input={fixture}", "format=sharegpt", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    monkeypatch.undo()
    resumed = run_step("sdf", f"input={fixture}", "format=sharegpt", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    assert resumed.resumed_from == 2 and resumed.counts == whole.counts  # counts made before resuming: once
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    with pytest.raises(UserError, match="format 'prompt' makes prompt examples|cannot turn 'prompt'"):
        run_step("sdf", f"input={prompts}", f"output={tmp_path / 'x.jsonl'}", *ARGS)
