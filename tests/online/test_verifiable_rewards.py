"""Verifiable rewards (exact_match, numeric_match, math_verify) on hand-made completions: the shared
answer-extraction rule, normalisation, numbers compared as numbers, format_reward, and the one-line
error for a prompt without a reference."""
import sys
from fractions import Fraction

import pytest
import torch

from alignkit.errors import UserError
from alignkit.plugins.rewards.verifiable import (
    exact_match,
    extract_answer,
    math_verify,
    normalize_answer,
    numeric_match,
    parse_number,
)


@pytest.mark.parametrize("text, fallback, answer, rule", [
    ("First 2 + 2 = 4, so \\boxed{4}. Then \\boxed{\\frac{3}{4}}.", "whole", "\\frac{3}{4}", "boxed"),  # last box
    ("\\boxed{a {b} c} and more text", "whole", "a {b} c", "boxed"),  # nested braces kept
    ("Natalia sold 48/2 = 24 clips in May.\n#### 1,000\n", "whole", "1,000", "marker"),
    ("So the answer is 122. I hope this helps, 7", "number", "122. I hope this helps, 7", "marker"),
    ("**Answer:** Paris.", "whole", "Paris", "marker"),
    ("Final answer:\n\n  72 apples\n", "whole", "72 apples", "marker"),  # marker ending its line: the next line
    ("The answer is: $\\frac{1}{2}$.", "whole", "\\frac{1}{2}", "marker"),
    ("23 + 99 = 122, or 121?", "number", "121", "number"),  # no marker: the last number
    ("23 + 99 = 122.", "whole", "23 + 99 = 122", "whole"),
    ("no number here", "number", None, "none"),
    ("   ", "whole", None, "none"),
])
def test_extract_answer_rule(text, fallback, answer, rule):
    assert extract_answer(text, fallback) == (answer, rule)


def test_normalize_and_parse_number():
    assert normalize_answer("  The  Eiffel\tTower. ") == "the eiffel tower"
    assert normalize_answer("'Paris'!") == "paris"
    # 1,000 = 1000 = 1000.0; 3/4 = 0.75 = \frac{3}{4}; the sign is kept unless glued to a word (5-3)
    assert parse_number("1,000") == parse_number("1000.0") == Fraction(1000)
    assert parse_number("3/4") == parse_number("0.75") == parse_number("\\frac{3}{4}") == Fraction(3, 4)
    assert parse_number("-12") == Fraction(-12) and parse_number("5-3") == Fraction(3)
    assert parse_number("72 apples") == Fraction(72) and parse_number("$1,234.5") == Fraction(2469, 2)
    assert parse_number("twelve") is None and parse_number("1/0") is None and parse_number(None) is None


def test_exact_match_values():
    completions = ["Paris.", "The answer is \\boxed{ PARIS }", "#### paris", "Answer: London", "London", ""]
    refs = ["paris"] * 6
    assert exact_match([""] * 6, completions, references=refs) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # format_reward: a wrong answer in a box or after a marker; a bare wrong answer or nothing gets 0
    assert exact_match([""] * 6, completions, references=refs, format_reward=0.1) == [1.0, 1.0, 1.0, 0.1, 0.0, 0.0]
    # the reference goes through the same extraction: a GSM8K-style solution's final answer counts
    assert exact_match(["q"], ["42"], references=["6 * 7 = 42\n#### 42"]) == [1.0]


def test_numeric_match_values():
    completions = [
        "23 + 99 = 122",                  # last number, no marker
        "The answer is 1,000.0 dollars",  # commas and decimals
        "\\boxed{3/4}",                   # a fraction against 0.75
        "#### 1,200",                     # GSM8K style
        "I think 121",                    # wrong
        "I do not know",                  # no number
        "The answer is -7.",              # negative
    ]
    refs = ["122", "1000", "0.75", "1200", "122", "122", "-7"]
    assert numeric_match([""] * 7, completions, references=refs) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert numeric_match([""] * 7, completions, references=refs, format_reward=0.25) == \
        [1.0, 1.0, 1.0, 1.0, 0.25, 0.0, 1.0]
    # rel_tol: 0.33 vs 1/3 differs by 1% of 1/3
    assert numeric_match(["", ""], ["0.33", "0.3"], references=["1/3", "1/3"]) == [0.0, 0.0]
    assert numeric_match(["", ""], ["0.33", "0.3"], references=["1/3", "1/3"], rel_tol=0.02) == [1.0, 0.0]


@pytest.mark.parametrize("fn", [exact_match, numeric_match, math_verify])
def test_missing_reference_is_a_one_line_error_naming_the_function(fn):
    with pytest.raises(UserError) as err:
        fn(["What is 2 + 2? Answer with a number.", "What is 3 + 3?"], ["4", "6"], references=["4", None])
    text = str(err.value)
    assert "\n" not in text and f"reward function {fn.__name__!r}" in text
    assert "prompt 1 ('What is 3 + 3?') has none" in text and "'reference' field" in text
    with pytest.raises(UserError, match="prompt 0"):
        fn(["What is 2 + 2?"], ["4"])  # no references at all


def test_numeric_reference_without_a_number_is_an_error():
    with pytest.raises(UserError, match="holds no number.*exact_match or math_verify"):
        numeric_match(["q"], ["4"], references=["Paris"])


def test_math_verify_latex():
    pytest.importorskip("math_verify")
    completions = ["So \\boxed{\\frac{1}{2}}", "The answer is 0.5", "The answer is $\\frac{2}{3}$", "no answer"]
    refs = ["0.5", "\\frac{1}{2}", "1/2", "1/2"]
    assert math_verify([""] * 4, completions, references=refs) == [1.0, 1.0, 0.0, 0.0]
    assert math_verify([""] * 4, completions, references=refs, format_reward=0.1) == [1.0, 1.0, 0.1, 0.0]


def test_math_verify_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # `import math_verify` now raises ImportError
    with pytest.raises(UserError, match=r"needs the math-verify package; pip install 'alignkit\[math\]'"):
        math_verify(["q"], ["\\boxed{1}"], references=["1"])


def test_registered_and_scored_with_references():
    from alignkit.registry import build_registry
    from alignkit.rollout.rewards import RewardScorer

    registry = build_registry()
    assert {"exact_match", "numeric_match", "math_verify"} <= set(registry.reward_functions)
    scorer = RewardScorer(function=registry.reward_functions["numeric_match"][0], name="numeric_match",
                          kwargs={"format_reward": 0.1})
    assert scorer.pass_references
    scores = scorer(["What is 2 + 2?"] * 3, ["4", "The answer is 5", "no"], references=["4", "4", "4"])
    assert torch.equal(scores, torch.tensor([1.0, 0.1, 0.0]))
