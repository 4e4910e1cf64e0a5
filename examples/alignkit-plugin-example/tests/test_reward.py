"""word_overlap on hand-made inputs."""
import pytest

from alignkit_plugin_example import word_overlap


def test_share_of_reference_words():
    scores = word_overlap(["q1", "q2"], ["The cat sat.", "a dog"], references=["the cat sat down", "A cat"])
    assert scores == [pytest.approx(3 / 4), pytest.approx(1 / 2)]


def test_no_reference():
    assert word_overlap(["q"], ["anything"]) == [0.0]
    assert word_overlap(["q", "q"], ["x", "y"], references=[None, "  "], empty_score=-1.0) == [-1.0, -1.0]


def test_one_score_per_completion_in_range():
    out = word_overlap(["a"] * 3, ["", "b c", "c"], references=["b c"] * 3)
    assert out == [0.0, 1.0, 0.5]
