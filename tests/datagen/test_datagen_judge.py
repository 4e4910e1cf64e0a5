"""The judge's score parser against hand-made answers, and the judge's retries and skips."""
import pytest

from alignkit.datagen.judge import parse_score


@pytest.mark.parametrize("answer, expected", [
    ("Score: 4", 4.0),
    ("Score: 4\nThe answer is accurate but short.", 4.0),
    ("**Rating:** 5", 5.0),
    ("## Score: 2/5", 2.0),
    ("My rating is 3 because it misses a step.", 3.0),
    ("I rated it as a 2.", 2.0),
    ("Score: four", 4.0),
    ("Score: 3.5", 3.5),
    ("I would give it 3 out of 5.", 3.0),
    ("4/5 - mostly correct", 4.0),
    ("4", 4.0),
    ("5.", 5.0),
    ("The response is fine. I'd give it a 4.", 4.0),
    # the first label decides, even when other numbers follow
    ("1. Accuracy: good. 2. Style: poor. Score: 3", 3.0),
])
def test_parses_hand_made_answers(answer, expected):
    assert parse_score(answer, 1, 5) == expected


@pytest.mark.parametrize("answer", [
    "Score: 7",  # labelled but off the scale: not guessed
    "9/10",  # a fraction of another scale, and 9 is off this one
    "somewhere between 2 and 4",  # two candidates
    "I cannot rate this.",
    "",
    "Score: 0",  # below the scale
])
def test_rejects_what_does_not_parse(answer):
    assert parse_score(answer, 1, 5) is None


def test_scale_bounds_are_the_config():
    assert parse_score("Score: 0", 0, 5) == 0.0
    assert parse_score("Score: 9", 1, 10) == 9.0
    assert parse_score("7 out of 10", 1, 10) == 7.0


class _ScriptedModel:
    """Stands in for generate_from_prompts: answers from a script, one list per attempt."""

    def __init__(self, attempts):
        self.attempts = list(attempts)
        self.temperatures = []

    def __call__(self, model, tok, prompts, data_cfg, max_new_tokens, temperature):
        from types import SimpleNamespace

        self.temperatures.append(temperature)
        answers = self.attempts.pop(0)
        assert len(answers) == len(prompts)
        return SimpleNamespace(completions=answers)


def test_judge_retries_unparsed_answers_then_reports_none(monkeypatch, tiny_tokenizer):
    from omegaconf import OmegaConf

    import alignkit.rollout.generation as generation
    from alignkit.datagen.judge import Judge, JudgeConfig

    # 3 pairs: the first parses at once, the second on the first retry, the third never
    script = _ScriptedModel([["Score: 5", "hmm", "no idea"], ["Score: 2", "still no"], ["nope"]])
    monkeypatch.setattr(generation, "generate_from_prompts", script)
    cfg = OmegaConf.structured(JudgeConfig(retries=2, require_chat_template=False))
    judge = Judge(None, tiny_tokenizer, cfg, None, batch_size=8)
    scores = judge(["a", "b", "c"], ["x", "y", "z"])
    assert scores[:2].tolist() == [5.0, 2.0] and scores[2].isnan()
    assert judge.answers == ["Score: 5", "Score: 2", "nope"]
    assert script.temperatures == [0.0, 0.7, 0.7]  # greedy first, sampled retries


def test_judge_needs_a_chat_template_unless_told_otherwise(tiny_tokenizer):
    from omegaconf import OmegaConf

    from alignkit.datagen.judge import Judge, JudgeConfig
    from alignkit.errors import UserError

    with pytest.raises(UserError, match="no chat template.*judge.require_chat_template=false"):
        Judge(None, tiny_tokenizer, OmegaConf.structured(JudgeConfig()), None, name="tiny")


def test_judge_prompt_fills_the_template(tiny_tokenizer):
    from omegaconf import OmegaConf

    from alignkit.datagen.judge import Judge, JudgeConfig

    cfg = OmegaConf.structured(JudgeConfig(template="[{min_score}-{max_score}] {instruction} => {response}",
                                           require_chat_template=False))
    judge = Judge(None, tiny_tokenizer, cfg, None)
    assert judge.prompt([{"role": "user", "content": "hi"}], "hello") == "[1-5] user: hi => hello"


def test_unknown_template_field_is_a_one_line_error(tiny_tokenizer):
    from omegaconf import OmegaConf

    from alignkit.datagen.judge import Judge, JudgeConfig
    from alignkit.errors import UserError

    cfg = OmegaConf.structured(JudgeConfig(template="{question} {response}", require_chat_template=False))
    with pytest.raises(UserError, match=r"judge.template uses unknown fields \['question'\]"):
        Judge(None, tiny_tokenizer, cfg, None)
