"""alignkit data arithmetic: hand-checked problems and answers, seeded determinism, disjoint splits
(by arithmetic, whatever the wording), the step's files, and the bundled files being its output."""
import re

import pytest

from alignkit.datagen.arithmetic import SUFFIX, Problem, capacity, generate_problems, render
from alignkit.errors import UserError

from datagen_helpers import read_jsonl

BUNDLED = "pkg://alignkit/assets/arithmetic"
PLAIN = re.compile(r"^(?:What is|Calculate) (\d+) (\+|-|×|plus|minus|times) (\d+)[?.] Answer with a number\.$")
OPS = {"+": "add", "plus": "add", "-": "sub", "minus": "sub", "×": "mul", "times": "mul"}


def _key(row):
    """The arithmetic of a plain question (None for a word problem): the split's dedup key."""
    m = PLAIN.match(row["prompt"])
    return Problem(OPS[m.group(2)], int(m.group(1)), int(m.group(3))).key if m else None


def test_problems_answers_and_keys_by_hand():
    assert Problem("add", 23, 99).answer == 122 and Problem("sub", 98, 54).answer == 44
    assert Problem("mul", 7, 12).answer == 84
    # order does not matter for + and ×, it does for -
    assert Problem("add", 99, 23).key == Problem("add", 23, 99).key == ("add", 23, 99)
    assert Problem("mul", 12, 7).key == ("mul", 7, 12) and Problem("sub", 98, 54).key == ("sub", 98, 54)


def test_render_plain_and_word_problems():
    import random

    rng = random.Random(0)
    plain = render(Problem("add", 23, 99), rng, word_problems=0.0)
    assert plain in ("What is 23 + 99?" + SUFFIX, "Calculate 23 + 99." + SUFFIX, "What is 23 plus 99?" + SUFFIX)
    word = render(Problem("sub", 5, 1), random.Random(1), word_problems=1.0)
    assert word.endswith(SUFFIX) and "5 " in word and " 1 " in word and not PLAIN.match(word)
    # a count of one takes the singular noun
    words = {render(Problem("add", 1, 2), random.Random(s), 1.0) for s in range(40)}
    assert any(re.search(r"\b1 (apple|marble|sticker|book|pencil|cookie|coin|stamp|card|shell)\b", w) for w in words)
    assert not any(re.search(r"\b1 \w+s in\b|has 1 \w+s\b", w) for w in words)


def test_capacity_by_hand_and_exhaustion():
    # max_operand 3, max_factor 2: add {1,1} {1,2} {1,3} {2,2} {2,3} {3,3}; sub 2-1 3-1 3-2; mul 2×2 2×3
    assert capacity(["add", "sub", "mul"], 3, 2) == 6 + 3 + 2
    train, test = generate_problems(7, 4, seed=5, max_operand=3, max_factor=2)  # every problem there is
    answers = sorted(int(r["reference"]) for r in train + test)
    assert answers == sorted([2, 3, 4, 4, 5, 6] + [1, 2, 1] + [4, 6])
    with pytest.raises(UserError, match="only 11 distinct problems.*raise max_operand"):
        generate_problems(8, 4, seed=5, max_operand=3, max_factor=2)
    with pytest.raises(UserError, match="unknown operation"):
        generate_problems(2, 2, operations=["div"])


def test_seeded_and_deterministic():
    a = generate_problems(200, 50, seed=3)
    assert a == generate_problems(200, 50, seed=3)
    assert a != generate_problems(200, 50, seed=4)
    # the held-out problems depend on seed, test and difficulty only, not on the number of training problems
    assert generate_problems(20, 50, seed=3)[1] == a[1]


def test_splits_never_overlap_in_arithmetic_or_wording():
    train, test = generate_problems(2000, 300, seed=0, word_problems=0.0)  # plain: every key readable
    train_keys, test_keys = [_key(r) for r in train], [_key(r) for r in test]
    assert None not in train_keys + test_keys
    assert len(set(train_keys)) == 2000 and len(set(test_keys)) == 300 and not set(train_keys) & set(test_keys)
    assert all(str(Problem(*k).answer) == r["reference"] for k, r in zip(train_keys, train))
    mixed_train, mixed_test = generate_problems(2000, 300, seed=0)
    assert not {r["prompt"] for r in mixed_train} & {r["prompt"] for r in mixed_test}


def test_default_difficulty():
    train, test = generate_problems(2000, 300, seed=0, word_problems=0.0)
    ops = [_key(r)[0] for r in train + test]
    share = {op: ops.count(op) / len(ops) for op in ("add", "sub", "mul")}
    # ordered operand pairs: add 50², sub 50·49, mul 2·11·49 -> 2500, 2450, 1078 of 6028: 0.415, 0.406, 0.179
    assert share["add"] == pytest.approx(0.415, abs=0.03) and share["mul"] == pytest.approx(0.179, abs=0.02)
    answers = {op: [int(r["reference"]) for r in train + test if _key(r)[0] == op] for op in share}
    assert max(answers["add"]) <= 100 and 0 < min(answers["sub"]) and max(answers["sub"]) < 50
    assert 4 <= min(answers["mul"]) and max(answers["mul"]) <= 12 * 50
    assert sum(int(r["reference"]) < 200 for r in train + test) > 0.9 * 2300


def test_step_writes_both_files(run_step, tmp_path):
    out, held = tmp_path / "arith" / "train.jsonl", tmp_path / "arith" / "test.jsonl"
    step = run_step("arithmetic", f"output={out}", f"test_output={held}", "train=40", "test=10", "seed=3",
                    "max_operand=20")
    train, test = generate_problems(40, 10, seed=3, max_operand=20)
    assert read_jsonl(out) == train and read_jsonl(held) == test
    assert dict(step.counts) == {"train": 40, "test": 10}
    assert (tmp_path / "arith" / "train.provenance.json").exists()
    with pytest.raises(UserError, match="test_output .* already exists"):
        run_step("arithmetic", f"output={tmp_path / 'other.jsonl'}", f"test_output={held}")
    # test_output defaults to <output stem>.test.jsonl
    run_step("arithmetic", f"output={tmp_path / 'a.jsonl'}", "train=5", "test=3")
    assert read_jsonl(tmp_path / "a.test.jsonl") == generate_problems(5, 3)[1]


def test_bundled_files_are_the_step_output_with_defaults():
    from alignkit.data.load import resolve_path

    train, test = generate_problems(2000, 300, seed=0)
    assert read_jsonl(resolve_path(f"{BUNDLED}/train.jsonl")) == train, \
        "regenerate: alignkit data arithmetic output=core/assets/arithmetic/train.jsonl " \
        "test_output=core/assets/arithmetic/test.jsonl overwrite=true"
    assert read_jsonl(resolve_path(f"{BUNDLED}/test.jsonl")) == test
