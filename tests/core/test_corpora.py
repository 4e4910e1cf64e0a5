"""Loaders of human-written instruction sets (Dolly, ShareGPT, OpenAssistant, Alpaca) on
real-shaped fixtures: the exact examples out, ranks to ranked lists, left-out records counted,
bad records named by file, line and field."""
import json
from collections import Counter
from pathlib import Path

import pytest

from alignkit.config.schema import DataSource
from alignkit.data.load import DataError, load_source

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
HAIKU = "A haiku is a three-line Japanese poem of 5, 7 and 5 syllables."
RAIN = "Soft rain on the roof / the kettle begins to sing / nobody is late."


@pytest.fixture(scope="module")
def formats():
    from alignkit.registry import build_registry

    return {name: spec for name, (spec, _) in build_registry().data_formats.items()}


def load(formats, name, fmt="auto", kind="sft"):
    skipped = Counter()
    train, _ = load_source(DataSource(path=str(FIX / name), format=fmt, eval_size=0), formats, kind, 0,
                           skipped=skipped)
    return sorted(train, key=json.dumps), dict(skipped)


def test_dolly_prompt_is_instruction_then_context(formats):
    out, skipped = load(formats, "dolly.jsonl")  # format: auto detects dolly
    assert skipped == {}
    assert out == sorted([
        {"prompt": "When did Virgin Australia start operating?\n\nVirgin Australia, the trading name of Virgin "
                   "Australia Airlines Pty Ltd, is an Australian-based airline. It commenced services on 31 August "
                   "2000 as Virgin Blue, with two aircraft on a single route.",
         "completion": "Virgin Australia commenced services on 31 August 2000 as Virgin Blue, with two aircraft on "
                       "a single route."},
        {"prompt": "Which is a species of fish? Tope or Rope", "completion": "Tope"},
        {"prompt": "Give me three ideas for a rainy afternoon.",
         "completion": "Bake bread, read a novel, or build a blanket fort."},
    ], key=json.dumps)


def test_alpaca_json_array(formats):
    out, _ = load(formats, "alpaca.json")
    assert out == sorted([
        {"prompt": "Give three tips for staying healthy.",
         "completion": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Get enough sleep."},
        {"prompt": "Identify the odd one out.\n\nTwitter, Instagram, Telegram", "completion": "Telegram"},
    ], key=json.dumps)


def test_sharegpt_roles_cuts_and_skips(formats):
    out, skipped = load(formats, "sharegpt.json")
    assert skipped == {"no_reply": 2}  # an empty conversation and one with a question only
    assert out == sorted([
        {"prompt": [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "How do I reverse a list in Python?"},
                    {"role": "assistant", "content": "Use `my_list[::-1]` for a reversed copy or `my_list.reverse()` "
                                                     "in place."},
                    {"role": "user", "content": "Which one is faster?"}],
         "completion": "`reverse()` avoids a copy, so it is faster for large lists."},
        # the leading assistant turn and the unanswered last question are cut off
        {"prompt": [{"role": "user", "content": "Translate 'good morning' to French."}], "completion": "Bonjour."},
    ], key=json.dumps)


def test_oasst_best_ranked_path(formats):
    out, skipped = load(formats, "oasst.jsonl")  # auto: the message-tree columns select oasst
    assert skipped == {"deleted": 2, "synthetic": 1, "below_deleted": 1, "orphan": 1, "no_reply": 1}
    assert out == sorted([
        # rank 0 at each step, the child listed before its parent in the file
        {"prompt": [{"role": "user", "content": "What is a haiku?"}, {"role": "assistant", "content": HAIKU},
                    {"role": "user", "content": "Write one about rain."}], "completion": RAIN},
        # no reply ranked: the first in the file
        {"prompt": [{"role": "user", "content": "Wie spät ist es in Tokio?"}],
         "completion": "Das kann ich nicht wissen, ich habe keine Uhr."},
    ], key=json.dumps)


def test_oasst_ranked_siblings(formats):
    out, skipped = load(formats, "oasst.jsonl", "oasst-ranked", "ranked")
    assert skipped == {"deleted": 2, "synthetic": 1, "below_deleted": 1, "orphan": 1, "unranked": 2}
    assert out == sorted([
        {"prompt": [{"role": "user", "content": "What is a haiku?"}],
         "responses": [HAIKU, "A haiku is a short poem.", "I don't know."], "scores": [2.0, 1.0, 0.0]},
        # the deleted third reply is not in the list
        {"prompt": [{"role": "user", "content": "What is a haiku?"}, {"role": "assistant", "content": HAIKU},
                    {"role": "user", "content": "Write one about rain."}],
         "responses": [RAIN, "Rain rain rain."], "scores": [1.0, 0.0]},
    ], key=json.dumps)
    pairs, _ = load(formats, "oasst.jsonl", "oasst-ranked", "preference")  # best against worst, for DPO
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {(HAIKU, "I don't know."), (RAIN, "Rain rain rain.")}


@pytest.mark.parametrize("name, fmt, message", [
    ("dolly_bad.jsonl", "dolly", "dolly_bad.jsonl, line 2, format 'dolly': missing field 'response'"),
    ("sharegpt_bad.jsonl", "sharegpt", "sharegpt_bad.jsonl, line 2, format 'sharegpt': field 'conversations', "
                                       "turn 1: unknown 'from' 'robot'"),
    ("oasst_bad.jsonl", "oasst", "oasst_bad.jsonl, line 3, format 'oasst': field 'role' is 'moderator'; "
                                 "expected prompter or assistant"),
])
def test_bad_records_name_file_line_and_field(formats, name, fmt, message):
    with pytest.raises(DataError) as err:
        load(formats, name, fmt)
    assert message in str(err.value)
    assert "data.sources[0].fields" in err.value.fix


def test_training_on_oasst_counts_skipped_records(tmp_path):
    """`alignkit train` reads the format by name and reports what it left out in data_stats.json."""
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    cfg = compose_config(["algo=sft", "model=tiny", "logger=none", "trainer.max_steps=1", "trainer.batch_size=1",
                          "trainer.eval_steps=0", "trainer.progress=false", "trainer.num_threads=1",
                          "data=hh-rlhf-small",
                          f"data.sources.0.path={FIX / 'oasst.jsonl'}", "data.sources.0.format=oasst",
                          "data.sources.0.eval_size=0", "data.sources.0.max_examples=null",
                          f"trainer.output_dir={tmp_path}"])
    train(cfg, run_dir=str(tmp_path / "run"))
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert stats["skipped_records"] == {"data.sources[0]": {"below_deleted": 1, "deleted": 2, "no_reply": 1,
                                                            "orphan": 1, "synthetic": 1}}
    assert stats["train"]["examples"] == 2
