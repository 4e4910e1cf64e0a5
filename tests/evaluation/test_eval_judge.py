"""Pairwise LLM judge (alignkit.evaluation.judge): verdicts from label log-probs, both orders, Wilson CI."""
import math
import re
from types import SimpleNamespace

import pytest
import torch

from alignkit.errors import UserError
from alignkit.evaluation import judge as judge_mod
from alignkit.evaluation.judge import judge_pairs
from alignkit.metrics import wilson_interval

QUALITY = {"good": 2.0, "fine": 1.0, "bad": 0.0}


class StubJudge(torch.nn.Module):
    """A judge whose label logits are known: at the last real token, logit(A) = bias + q(first shown)
    and logit(B) = q(second shown) for both spellings of each label, every other logit 0, so
    P(A) / (P(A) + P(B)) = sigmoid(bias + q(first) - q(second)) exactly."""

    def __init__(self, tokenizer, bias: float = 0.0):
        super().__init__()
        self.tok, self.bias = tokenizer, bias
        self.ids = {lab: [tokenizer(s, add_special_tokens=False)["input_ids"][0] for s in (lab, " " + lab)]
                    for lab in ("A", "B")}
        self.register_buffer("dummy", torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        b, t = input_ids.shape  # [B, T], left-padded
        assert (attention_mask[:, -1] == 1).all()  # the last column is every row's last real token
        assert torch.equal(position_ids[attention_mask.bool()].min(), torch.tensor(0))
        self.calls.append(b)
        logits = torch.zeros(b, 1, len(self.tok))  # [B, 1, V]
        for r in range(b):
            text = self.tok.decode(input_ids[r][attention_mask[r].bool()])
            first = re.search(r"\[Response A\]\n(\w+)", text).group(1)
            second = re.search(r"\[Response B\]\n(\w+)", text).group(1)
            logits[r, 0, self.ids["A"]] = self.bias + QUALITY[first]
            logits[r, 0, self.ids["B"]] = QUALITY[second]
        return SimpleNamespace(logits=logits)


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_content_judge_wins_losses_and_exact_ties(tiny_tokenizer):
    stub = StubJudge(tiny_tokenizer)
    a = ["good", "bad", "fine", "good"]
    b = ["bad", "good", "fine", "fine"]
    r = judge_pairs(stub, tiny_tokenizer, ["q1", "q2", "q3", "q4"], a, b, batch_size=3, progress=False)
    assert [v["outcome"] for v in r["verdicts"]] == ["a", "b", "tie", "a"]
    assert (r["wins"], r["losses"], r["ties"], r["n"]) == (2, 1, 1, 4)
    assert r["win_rate"] == 2.5 / 4
    assert r["agreement"] == 3 / 4  # the equal pair has no preference in either order
    assert r["verdicts"][2]["prefer_a_first_order"] is None and r["verdicts"][2]["p_a_first_order"] == 0.5
    assert r["verdicts"][0]["p_a_first_order"] == pytest.approx(_sig(2.0), abs=1e-6)
    assert r["verdicts"][0]["p_a_second_order"] == pytest.approx(_sig(2.0), abs=1e-6)
    assert r["win_rate_ci"] == wilson_interval(0.625, 4)
    assert r["template"] == "pairwise"
    assert sum(stub.calls) == 8 and max(stub.calls) == 3  # both orders of every pair, in batches of 3


def test_position_biased_judge_ties_everything(tiny_tokenizer):
    stub = StubJudge(tiny_tokenizer, bias=5.0)  # the first-shown response always wins by far
    r = judge_pairs(stub, tiny_tokenizer, ["q1", "q2", "q3"], ["good", "bad", "fine"], ["bad", "good", "good"],
                    progress=False)
    assert [v["outcome"] for v in r["verdicts"]] == ["tie", "tie", "tie"]
    assert all(v["prefer_a_first_order"] is True and v["prefer_a_second_order"] is False for v in r["verdicts"])
    assert (r["win_rate"], r["agreement"], r["ties"]) == (0.5, 0.0, 3)


def test_moderate_position_bias_is_cancelled_only_when_content_outweighs_it(tiny_tokenizer):
    stub = StubJudge(tiny_tokenizer, bias=1.5)
    # good vs bad (quality gap 2 > bias): a wins in both orders; good vs fine (gap 1 < bias): each order picks
    # the first-shown response, a tie; fine vs good: the same tie seen from b's side
    r = judge_pairs(stub, tiny_tokenizer, ["q"] * 3, ["good", "good", "fine"], ["bad", "fine", "good"],
                    progress=False)
    assert [v["outcome"] for v in r["verdicts"]] == ["a", "tie", "tie"]
    v = r["verdicts"][1]
    assert v["p_a_first_order"] == pytest.approx(_sig(1.5 + 1.0), abs=1e-6)
    assert v["p_a_second_order"] == pytest.approx(1 - _sig(1.5 - 1.0), abs=1e-6)
    assert r["win_rate"] == pytest.approx(2 / 3) and r["agreement"] == pytest.approx(1 / 3)


def test_batch_size_does_not_change_verdicts(tiny_tokenizer):
    stub = StubJudge(tiny_tokenizer, bias=0.5)
    args = (["q1", "a longer question here", "q3"], ["good", "fine", "bad"], ["fine", "bad", "good"])
    r1 = judge_pairs(stub, tiny_tokenizer, *args, batch_size=1, progress=False)
    r4 = judge_pairs(stub, tiny_tokenizer, *args, batch_size=4, progress=False)
    assert r1["verdicts"] == r4["verdicts"]


def test_prompt_rendering_plain_and_chat(tiny_tokenizer, monkeypatch):
    seen = {}

    def fake(model, tokenizer, texts, label_ids, **kw):
        seen["texts"], seen["kw"] = list(texts), kw
        return torch.tensor([[0.0, -1.0]] * len(texts))  # [N, 2]: always the first-shown label

    monkeypatch.setattr(judge_mod, "label_logprobs", fake)
    msgs = [{"role": "user", "content": "hello?"}, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "and?"}]
    r = judge_pairs(None, tiny_tokenizer, [msgs], ["X1"], ["Y2"], progress=False)
    first, second = seen["texts"]
    assert first.index("X1") < first.index("Y2") and second.index("Y2") < second.index("X1")
    assert "user: hello?\nassistant: hi\nuser: and?" in first  # chat prompts shown as role lines
    assert first.endswith("\n\nAnswer:") and seen["kw"]["add_special_tokens"] is True
    assert r["verdicts"][0]["outcome"] == "tie"

    from alignkit.models.tiny import load_tiny_tokenizer

    chat_tok = load_tiny_tokenizer()
    chat_tok.chat_template = ("{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                              "{% if add_generation_prompt %}assistant:{% endif %}")
    judge_pairs(None, chat_tok, ["p"], ["X1"], ["Y2"], progress=False, template="{prompt}|{first}|{second}")
    assert seen["texts"] == ["<|bos|>user: p|X1|Y2\nassistant:", "<|bos|>user: p|Y2|X1\nassistant:"]
    assert seen["kw"]["add_special_tokens"] is False  # the template holds BOS already


def test_errors_are_one_line_user_errors(tiny_tokenizer, tmp_path):
    with pytest.raises(UserError, match="2 prompts, 1 responses a and 2 responses b"):
        judge_pairs(None, tiny_tokenizer, ["p", "q"], ["a"], ["b", "c"])
    with pytest.raises(UserError, match=r"unknown fields \['answer'\]"):
        judge_pairs(None, tiny_tokenizer, ["p"], ["a"], ["b"], template="{first} {second} {answer}")
    with pytest.raises(UserError, match="must show both responses"):
        judge_pairs(None, tiny_tokenizer, ["p"], ["a"], ["b"], template="{prompt} {first}")
    with pytest.raises(UserError, match="template file not found"):
        judge_pairs(None, tiny_tokenizer, ["p"], ["a"], ["b"], template=f"file:{tmp_path}/missing.txt")
    with pytest.raises(UserError, match="no pairs"):
        judge_pairs(None, tiny_tokenizer, [], [], [])


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(7, 10), (0, 5), (5, 5), (50, 120)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_tiny_model_judge_swap_symmetry(tiny_tokenizer):
    from alignkit.config.compose import compose_config
    from alignkit.models import build_model

    cfg = compose_config(["model=tiny"])
    torch.manual_seed(2)
    model = build_model(cfg.model, tokenizer=tiny_tokenizer)
    with torch.no_grad():  # larger random weights, so the content (not only the position) moves the verdicts
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    prompts = ["hi there", "what is 2+2?", "tell me a joke", "name a colour", "how are you", "capital of France?"]
    a = ["hello", "4", "no", "blue", "fine thanks", "Paris"]
    b = ["go away", "5", "why did the chicken cross", "seven", "bad", "London is big"]
    r = judge_pairs(model, tiny_tokenizer, prompts, a, b, batch_size=4, progress=False)
    s = judge_pairs(model, tiny_tokenizer, prompts, b, a, batch_size=4, progress=False)
    assert r["n"] == 6 and len(r["verdicts"]) == 6
    assert r["wins"] + r["losses"] + r["ties"] == 6
    assert 0.0 <= r["win_rate"] <= 1.0 and 0.0 <= r["agreement"] <= 1.0
    lo, hi = r["win_rate_ci"]
    assert 0.0 <= lo <= r["win_rate"] <= hi <= 1.0
    assert all(0.0 < v["p_a_first_order"] < 1.0 and 0.0 < v["p_a_second_order"] < 1.0 for v in r["verdicts"])
    assert s["win_rate"] == pytest.approx(1.0 - r["win_rate"], abs=1e-12)
    assert s["agreement"] == r["agreement"]
    assert (s["wins"], s["losses"]) == (r["losses"], r["wins"])
    for v, w in zip(r["verdicts"], s["verdicts"]):
        assert w["p_a_first_order"] == pytest.approx(1.0 - v["p_a_second_order"], abs=1e-6)
    assert r["agreement"] > 0  # this seed's judge is not purely position-biased
