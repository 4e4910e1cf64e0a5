"""self-chat (Baize): turn filters by hand, stop rules on scripted turns, and the step on the tiny model
(structure, provenance, counted skips, resume after an interrupt)."""
import json
from types import SimpleNamespace

import pytest

from alignkit.datagen.self_chat import clean_turn, repetition, turn_problem

from datagen_helpers import Interrupt, read_jsonl, write_jsonl

SEEDS = ["How do I cook rice?", "Why is the sky blue?", "Say something.", "What language should I learn first?",
         "How do plants drink water?", "What is a prime number?"]
RULES = SimpleNamespace(min_words=2, max_repetition=0.5, repeat_threshold=0.8)


def test_repetition_and_turn_problems_by_hand():
    assert repetition("a b c a b c a b c") == pytest.approx(1 - 3 / 7)  # trigrams abc bca cab abc bca cab abc
    assert repetition("one two three four") == 0.0 and repetition("hi") == 0.0
    assert turn_problem("Ok", [], RULES) == "empty"  # one word < min_words
    assert turn_problem("the the the the the the", [], RULES) == "degenerate"  # 3 of 4 trigrams repeat
    earlier = ["Rice needs two cups of water per cup."]
    assert turn_problem("Rice needs two cups of water, per cup!", earlier, RULES) == "repeated"  # Jaccard 1
    assert turn_problem("Rinse the rice before you cook it.", earlier, RULES) is None


def test_clean_turn_drops_labels_and_what_follows():
    labels = ["[|Human|]", "[|AI|]"]
    assert clean_turn(" [|Human|] How long should it simmer? [|AI|] About 18 minutes.", labels) == \
        "How long should it simmer?"
    assert clean_turn("Human: Is brown rice different?\nAssistant: Yes.", labels) == "Is brown rice different?"
    assert clean_turn("Use a 2:1 ratio.\nUser: thanks", labels) == "Use a 2:1 ratio."


def _scripted(monkeypatch, assistant: dict, user: dict):
    """generate_from_prompts answering from scripts: assistant prompts (message lists) by their last user
    message, user prompts (strings) by the last assistant reply they quote."""
    import alignkit.rollout.generation as generation

    def fake(model, tok, prompts, data_cfg, **kw):
        out = []
        for p in prompts:
            if isinstance(p, list):
                out.append(assistant[p[-1]["content"]])
            else:
                out.append(next(v for k, v in user.items() if f"[|AI|] {k}" in p))
        return SimpleNamespace(completions=out)

    monkeypatch.setattr(generation, "generate_from_prompts", fake)


def test_stop_rules_on_scripted_turns(monkeypatch):
    from collections import Counter

    from alignkit.datagen.compose import compose_step, data_step
    from alignkit.datagen.self_chat import SelfChat, _chat
    from alignkit.registry import build_registry

    cfg = compose_step(data_step(build_registry(), "self-chat"), ["input=x.jsonl", "output=y.jsonl", "max_turns=2"])
    _scripted(monkeypatch, assistant={
        "rice?": "Rinse it, then simmer with twice the water.",
        "How long should it simmer?": "Rinse it, then simmer with twice the water!",  # repeats the first reply
        "sky?": "Air scatters blue light more than red.",
        "degenerate?": "the the the the the the the",
        "first?": "Start with Python; it reads clearly.",
        "Which book should I use for it?": "[|AI|] Try Automate the Boring Stuff. [|Human|] thanks",
    }, user={
        "Rinse it, then simmer with twice the water.": "[|Human|] How long should it simmer? [|AI|] 18 min.",
        "Air scatters blue light more than red.": "Thanks, that helps!",
        "Start with Python; it reads clearly.": "Which book should I use for it?",
    })
    dialogues = [{"seed": s, "stop": None, "messages": [{"role": "user", "content": s}]}
                 for s in ("rice?", "sky?", "degenerate?", "first?")]
    counts = Counter()
    _chat(SelfChat(cfg), dialogues, None, None, None, counts)
    assert [d["stop"] for d in dialogues] == ["assistant_repeated", "user_ended", "assistant_degenerate", "max_turns"]
    assert counts == Counter({"stopped_assistant_repeated": 1, "stopped_user_ended": 1,
                              "stopped_assistant_degenerate": 1, "stopped_max_turns": 1})
    assert dialogues[0]["messages"] == [  # the unanswered follow-up is cut off: a dialogue ends with the assistant
        {"role": "user", "content": "rice?"},
        {"role": "assistant", "content": "Rinse it, then simmer with twice the water."}]
    assert dialogues[2]["messages"] == []
    assert dialogues[3]["messages"] == [
        {"role": "user", "content": "first?"}, {"role": "assistant", "content": "Start with Python; it reads clearly."},
        {"role": "user", "content": "Which book should I use for it?"},
        {"role": "assistant", "content": "Try Automate the Boring Stuff."}]


ARGS = ["max_turns=3", "assistant.max_new_tokens=12", "user.max_new_tokens=10", "min_words=1", "batch_size=2"]


def test_self_chat_on_the_tiny_model(run_step, registry, tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": s} for s in SEEDS])
    out = tmp_path / "chat.jsonl"
    step = run_step("self-chat", f"input={seeds}", f"output={out}", *ARGS)
    rows = read_jsonl(out)
    assert [r["seed"] for r in rows] == SEEDS and [r["seed_index"] for r in rows] == list(range(6))
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["user", "assistant"] * r["turns"] and 1 <= r["turns"] <= 3
        assert r["messages"][0]["content"] == r["seed"]
        assert r["stop"] in ("max_turns", "user_ended") or r["stop"].startswith(("assistant_", "user_"))
    c = step.counts
    assert c["seeds"] == 6 and c["dialogues"] == 6 and c["turns"] == sum(r["turns"] for r in rows)
    assert sum(v for k, v in c.items() if k.startswith("stopped_")) == 6
    prov = json.loads((tmp_path / "chat.provenance.json").read_text())
    assert prov["step"] == "self-chat" and prov["models"]["model"]["name"] == "tiny"
    assert prov["outputs"]["output"]["rows"] == 6 and prov["counts"]["turns"] == c["turns"]
    # the rows are the messages format: SFT reads the last turn with the rest as its prompt
    from alignkit.config.schema import DataSource
    from alignkit.data.load import load_source

    train, _ = load_source(DataSource(path=str(out), eval_size=0), step.formats(), "sft", 0)
    assert sorted(t["completion"] for t in train) == sorted(r["messages"][-1]["content"] for r in rows)


def test_self_chat_resumes_after_an_interrupt(run_step, tmp_path, monkeypatch):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": s} for s in SEEDS])
    run_step("self-chat", f"input={seeds}", f"output={tmp_path / 'whole.jsonl'}", *ARGS)
    Interrupt(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_step("self-chat", f"input={seeds}", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    monkeypatch.undo()
    assert len(read_jsonl(tmp_path / "cut.partial" / "rows.jsonl")) == 4
    step = run_step("self-chat", f"input={seeds}", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    assert step.resumed_from == 4
    assert read_jsonl(tmp_path / "cut.jsonl") == read_jsonl(tmp_path / "whole.jsonl")


def test_too_short_dialogues_are_counted_and_nothing_left_is_one_error(run_step, tmp_path):
    from alignkit.errors import UserError

    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": s} for s in SEEDS[:2]])
    with pytest.raises(UserError, match=r"self-chat has nothing to write .*skipped_too_short 2.*"
                                        r"stopped_assistant_empty 2"):
        run_step("self-chat", f"input={seeds}", f"output={tmp_path / 'c.jsonl'}", *ARGS, "min_words=500")
    assert not (tmp_path / "c.jsonl").exists()
