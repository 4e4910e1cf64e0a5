"""The PRO / RRHF / CoH algorithm classes on hand-built batches (no trainer)."""
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from alignkit.data.collate import collate
from alignkit.data.tokenize import tokenize_example
from alignkit.losses.pro import pro_loss
from alignkit.losses.rrhf import rrhf_loss
from alignkit.modeling import sequence_logprobs
from alignkit.models.tiny import tiny_llama_config
from alignkit.plugins.coh import CoH, CohConfig
from alignkit.plugins.pro import PRO, ProConfig
from alignkit.plugins.rrhf import RRHF, RrhfConfig

PAIRS = [
    {"prompt": "How do I bake bread?", "chosen": "Knead the dough, let it rise, bake it.", "rejected": "No."},
    {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": "Hi there, nice to meet you!", "rejected": "Go away"},
]
LISTS = [
    {"prompt": "Name a colour", "responses": ["Blue.", "Red is nice.", "no", "I like green a lot."],
     "scores": [2.0, 3.0, 0.0, 1.0]},
    {"prompt": "Count to three", "responses": ["1 2 3", "one"], "scores": [1.0, 0.0]},
]


@pytest.fixture(scope="module")
def run(tiny_tokenizer):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = tiny_llama_config(len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    run_cfg = OmegaConf.create({"data": {"max_length": 128, "max_prompt_length": 64, "truncation": "truncate"},
                                "model": {"fused_logprobs": True}, "trainer": {"seed": 0}})
    return SimpleNamespace(tokenizer=tiny_tokenizer, policy=LlamaForCausalLM(cfg), cfg=run_cfg,
                           device=torch.device("cpu"), extra={})


@pytest.mark.parametrize("name", ["pro", "rrhf"])
def test_ranked_algorithms_flatten_lists_and_match_the_pure_loss(run, name):
    """Padded [B, K, T] lists scored in one [N, T] forward give the pure loss of the
    per-response statistics computed one sequence at a time."""
    algo = PRO(ProConfig(), run) if name == "pro" else RRHF(RrhfConfig(length_penalty=0.5), run)
    feats = [algo.tokenize(ex) for ex in LISTS]
    batch = algo.collate(feats)
    assert batch["input_ids"].shape[:2] == (2, 4)
    assert batch["valid"].tolist() == [[True] * 4, [True, True, False, False]]
    loss, metrics = algo.compute_loss(batch)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in run.policy.parameters() if p.grad is not None)
    run.policy.zero_grad()
    mean = torch.zeros(2, 4)
    total = torch.zeros(2, 4)
    ntok = torch.zeros(2, 4)
    for b, f in enumerate(feats):
        for k in range(len(f["input_ids"])):
            one = collate([{"input_ids": f["input_ids"][k], "labels": f["labels"][k]}], "sft", run.tokenizer)
            with torch.no_grad():
                out = sequence_logprobs(run.policy, one["input_ids"], one["attention_mask"], one["labels"])
            mean[b, k], total[b, k], ntok[b, k] = out["mean"], out["sum"], out["ntokens"].float()
    if name == "pro":
        want, _ = pro_loss(mean, total, batch["scores"], batch["valid"])
    else:
        want, _ = rrhf_loss(total, ntok, batch["scores"], batch["valid"], length_penalty=0.5)
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)


def test_ranked_evaluate_reports_preference_accuracy(run):
    algo = PRO(ProConfig(), run)
    feats = [tokenize_example(ex, "preference", run.tokenizer, run.cfg.data) for ex in PAIRS]
    batch = collate(feats, "preference", run.tokenizer)
    out = algo.evaluate(batch)
    means = []
    for f in feats:  # each response alone
        for side in ("chosen", "rejected"):
            one = collate([{"input_ids": f[f"{side}_input_ids"], "labels": f[f"{side}_labels"]}], "sft", run.tokenizer)
            with torch.no_grad():
                seq = sequence_logprobs(run.policy, one["input_ids"], one["attention_mask"], one["labels"])
            means.append(seq["mean"].item())
    wins = [float(means[2 * i] > means[2 * i + 1]) for i in range(len(feats))]
    assert out["preference_accuracy"] == pytest.approx(sum(wins) / len(wins))
    assert out["logps/chosen_mean"] == pytest.approx((means[0] + means[2]) / 2, rel=1e-4)
    assert {"loss", "loss/rank", "loss/sft", "logps/margin_mean"} <= set(out)


def test_coh_batches_fcm_and_lm_mix(run):
    algo = CoH(CohConfig(fcm_max_ratio=0.5, lm_weight=0.5), run)
    feats = [algo.tokenize(ex) for ex in PAIRS]
    batch = algo.collate(feats)
    for key in ("input_ids", "attention_mask", "labels", "chosen_input_ids", "rejected_labels", "lm_input_ids"):
        assert key in batch
    run.policy.train()
    l_train, m = algo.compute_loss(batch)
    assert "loss/lm" in m and m["loss"] == pytest.approx(m["loss/feedback"] + 0.5 * m["loss/lm"])
    run.policy.eval()
    l_eval, _ = algo.compute_loss(batch)
    l_eval2, _ = algo.compute_loss(batch)
    assert l_eval.item() == l_eval2.item()  # no forgetful mask outside training
    assert l_train.item() != pytest.approx(l_eval.item(), abs=1e-6)  # the forgetful mask changed attention
    out = algo.evaluate(batch)
    assert 0.0 <= out["preference_accuracy"] <= 1.0 and out["loss"] == pytest.approx(l_eval.item(), rel=1e-5)


def test_coh_rejects_unknown_forms(run):
    with pytest.raises(ValueError, match="algo.forms"):
        CoH(CohConfig(forms=["good", "meh"]), run)
