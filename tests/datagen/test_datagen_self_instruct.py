"""self-instruct: proposal parsing, the filters (ROUGE-L by hand), a tiny-model run, resumption."""
import json
from types import SimpleNamespace

import pytest

from alignkit.datagen.self_instruct import BLOCKLIST, parse_task, reject_reason
from alignkit.datagen.similarity import RougePool

from datagen_helpers import SEEDS, Interrupt, read_jsonl


@pytest.mark.parametrize("text, expected", [
    (" Write a haiku about rain.", ("Write a haiku about rain.", "")),
    ("Task 9: Sort the numbers.\nInput: 3, 1, 2\n\nTask 10: Name a color.", ("Sort the numbers.", "3, 1, 2")),
    ("Instruction: Name three fruits.\nInput: <noinput>", ("Name three fruits.", "")),
    ("Summarize the text.\ninput: The cat sat.", ("Summarize the text.", "The cat sat.")),
    ("Name a zebra fact.\n\nOutput: Zebras have stripes.", ("Name a zebra fact.", "")),
    ("Name a fact.\nOutput: Stripes.\nInput: ignored", ("Name a fact.", "")),
    ("Write a haiku.\n\nSure, here is one more line.", ("Write a haiku.", "")),
    ("", ("", "")),
])
def test_parse_task(text, expected):
    assert parse_task(text) == expected


CFG = SimpleNamespace(min_words=3, max_words=8, blocklist=BLOCKLIST)


@pytest.mark.parametrize("instruction, reason", [
    ("", "empty"),
    ("Sort numbers", "too_short"),  # 2 words < 3
    ("one two three four five six seven eight nine", "too_long"),  # 9 > 8
    ("Draw a cat for me", "keyword"),
    ("Describe this image briefly", "keyword"),
    ("Explain how to go to school", "keyword"),  # a two-word blocklist entry
    ("Explain the mapping function", None),  # 'map' only as a whole word
    ("- List three colors", "format"),
    ("Écrivez trois couleurs ici", "format"),
    ("Input: Bees visit flowers to collect nectar.", "format"),  # an input, not a task
    ("List three colors please", None),
])
def test_reject_reasons(instruction, reason):
    assert reject_reason(instruction, CFG) == reason


def test_rouge_l_against_the_pool_by_hand():
    pool = RougePool(["Write a poem about the sea", "Translate the sentence into French"])
    # LCS with pool[0] = 6 words ("write a poem about the sea"); P = 6/7, R = 6/6: F1 = 12/13
    score, where = pool.most_similar("Write a short poem about the sea.")
    assert where == 0 and score == pytest.approx(12 / 13)
    # nothing in common
    assert pool.most_similar("List prime numbers") == (0.0, -1)
    # LCS "translate the sentence into" = 4 of 5 words each: F1 = 0.8; case and punctuation do not count
    score, where = pool.most_similar("TRANSLATE: the sentence into German!")
    assert where == 1 and score == pytest.approx(0.8)


def test_rouge_threshold_is_exclusive(monkeypatch):
    """A proposal is kept only when its ROUGE-L F1 is below the threshold (F1 = 0.8 here)."""
    from collections import Counter

    from alignkit.datagen.self_instruct import _filter

    cfg = SimpleNamespace(min_words=1, max_words=50, blocklist=[], rouge_threshold=0.8)
    counts = Counter()
    kept = _filter([("translate the sentence into german", "")], RougePool(["Translate the sentence into French"]),
                   cfg, room=5, counts=counts)
    assert kept == [] and counts == Counter({"rejected_similar": 1})
    cfg.rouge_threshold = 0.81
    kept = _filter([("translate the sentence into german", ""), ("translate the sentence into german", "")],
                   RougePool(["Translate the sentence into French"]), cfg, room=5, counts=counts)
    # the first joins the pool, so its twin is then rejected as similar (F1 = 1)
    assert [k["similarity"] for k in kept] == [0.8] and counts["rejected_similar"] == 2


def test_self_instruct_on_the_tiny_model(run_step, tmp_path):
    out = tmp_path / "si.jsonl"
    step = run_step("self-instruct", f"input={SEEDS}", f"output={out}", "target=5", "batch_size=4",
                    "proposal.max_new_tokens=24", "response.max_new_tokens=16")
    rows = read_jsonl(out)
    c = step.counts
    assert len(rows) == 5 == c["accepted"]
    assert {tuple(sorted(r)) for r in rows} == {("input", "instruction", "output", "similarity")}
    assert all(r["instruction"] and r["output"] and 0 <= r["similarity"] < 0.7 for r in rows)
    # every proposal is accepted, rejected for one reason, or unused once the target was reached
    rejected = sum(v for k, v in c.items() if k.startswith("rejected_") and k != "rejected_empty_output")
    assert c["proposed"] == c["accepted"] + c["rejected_empty_output"] + rejected + c["unused"]
    assert c["proposed"] == 4 * c["rounds"]
    prov = json.loads((tmp_path / "si.provenance.json").read_text())
    assert prov["step"] == "self-instruct" and prov["config"]["target"] == 5
    assert prov["inputs"][0]["rows"] == 16 and len(prov["inputs"][0]["fingerprint"]) == 16
    assert prov["models"]["model"]["name"] == "tiny" and prov["outputs"]["output"]["rows"] == 5
    assert not (tmp_path / "si.partial").exists()
    # the alpaca format makes the rows SFT examples as they are
    from alignkit.config.schema import DataSource
    from alignkit.data.load import load_source

    train, _ = load_source(DataSource(path=str(out), eval_size=0), step.formats(), "sft", 0)
    assert {(e["prompt"], e["completion"]) for e in train} == {
        (r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""), r["output"]) for r in rows}


def test_self_instruct_resumes_after_an_interrupt(run_step, tmp_path, monkeypatch):
    args = [f"input={SEEDS}", "target=6", "batch_size=3", "proposal.max_new_tokens=24", "response.max_new_tokens=12"]
    whole = run_step("self-instruct", *args, f"output={tmp_path / 'whole.jsonl'}")
    assert whole.counts["rounds"] >= 2
    interrupt = Interrupt(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        run_step("self-instruct", *args, f"output={tmp_path / 'cut.jsonl'}")
    partial = tmp_path / "cut.partial"
    assert (partial / "state.json").exists() and not (tmp_path / "cut.jsonl").exists()
    done = json.loads((partial / "state.json").read_text())["state"]
    assert done["round"] == 1
    interrupt.after = 0  # no more interrupts
    resumed = run_step("self-instruct", *args, f"output={tmp_path / 'cut.jsonl'}")
    assert resumed.resumed_from == done["done"]
    assert read_jsonl(tmp_path / "cut.jsonl") == read_jsonl(tmp_path / "whole.jsonl")
    assert resumed.counts == whole.counts
    assert not partial.exists()


def test_empty_seed_file_is_a_one_line_error(run_step, tmp_path):
    from alignkit.errors import UserError

    (tmp_path / "seeds.jsonl").write_text("")
    with pytest.raises(UserError, match="seeds.jsonl.*empty"):
        run_step("self-instruct", f"input={tmp_path / 'seeds.jsonl'}", f"output={tmp_path / 'o.jsonl'}")


def test_seed_without_instruction_names_file_line_and_field(run_step, tmp_path):
    from alignkit.errors import UserError

    (tmp_path / "seeds.jsonl").write_text('{"instruction": "Say hi."}\n{"task": "Say bye."}\n')
    with pytest.raises(UserError, match=r"seeds.jsonl, line 2: missing field 'instruction'"):
        run_step("self-instruct", f"input={tmp_path / 'seeds.jsonl'}", f"output={tmp_path / 'o.jsonl'}")
