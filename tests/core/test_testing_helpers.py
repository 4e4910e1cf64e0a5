"""alignkit.testing: fake batches in the documented layouts, and a run stand-in on which an
algorithm's compute_loss runs and backpropagates without the trainer."""
from dataclasses import dataclass

import pytest
import torch

from alignkit.api import IGNORE, Algorithm, AlgorithmSpec, check
from alignkit.testing import fake_batch, make_algorithm, make_run

B, T = 3, 12


def _check_seq(ids, mask, labels, shape):
    assert ids.shape == mask.shape == labels.shape == shape
    assert ids.dtype == mask.dtype == labels.dtype == torch.long
    assert set(mask.unique().tolist()) <= {0, 1}
    assert (labels[mask == 0] == IGNORE).all()  # padding carries no label
    resp = (labels != IGNORE)
    assert (labels[resp] == ids[resp]).all()  # unshifted: labels copy the ids on response tokens
    assert resp.flatten(0, -2).any(-1).all()  # every sequence has response tokens
    assert (labels.flatten(0, -2)[:, 0] == IGNORE).all()  # ... after a prompt


def test_sft_batch(tiny_tokenizer):
    b = fake_batch("sft", batch_size=B, seq_len=T, tokenizer=tiny_tokenizer)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    _check_seq(b["input_ids"], b["attention_mask"], b["labels"], (B, T))
    assert b["attention_mask"][0].all() and not b["attention_mask"][1:].all()  # one full row, padding in others
    assert (b["attention_mask"][:, 0] == 1).all()  # right padded


def test_preference_batch(tiny_tokenizer):
    b = fake_batch("preference", batch_size=B, seq_len=T, tokenizer=tiny_tokenizer)
    assert set(b) == {f"{s}_{k}" for s in ("chosen", "rejected") for k in ("input_ids", "attention_mask", "labels")} \
        | {"margin"}
    for side in ("chosen", "rejected"):
        _check_seq(b[f"{side}_input_ids"], b[f"{side}_attention_mask"], b[f"{side}_labels"], (B, T))
    assert not torch.equal(b["chosen_input_ids"], b["rejected_input_ids"])
    assert b["margin"].shape == (B,) and b["margin"].dtype == torch.float32


def test_ranked_batch(tiny_tokenizer):
    b = fake_batch("ranked", batch_size=B, seq_len=T, tokenizer=tiny_tokenizer)
    assert set(b) == {"input_ids", "attention_mask", "labels", "scores", "valid"}
    K = b["input_ids"].shape[1]
    valid = b["valid"]
    assert valid.shape == b["scores"].shape == (B, K) and valid.dtype == torch.bool
    assert b["scores"].dtype == torch.float32
    assert not valid.all() and valid[:, :2].all()  # a shorter list is padded (valid False)
    _check_seq(b["input_ids"][valid][:, None], b["attention_mask"][valid][:, None], b["labels"][valid][:, None],
               (int(valid.sum()), 1, T))
    assert (b["labels"][~valid] == IGNORE).all() and (b["attention_mask"][~valid] == 0).all()
    s = b["scores"][0]
    assert (s[:-1] > s[1:]).all()  # best first


def test_prompt_batch(tiny_tokenizer):
    b = fake_batch("prompt", batch_size=B, seq_len=T, tokenizer=tiny_tokenizer)
    assert set(b) == {"prompt_input_ids", "prompt_attention_mask", "prompts", "references"}
    ids, mask = b["prompt_input_ids"], b["prompt_attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == B and ids.shape[1] <= T // 2 and ids.dtype == torch.long
    assert (mask[:, -1] == 1).all() and not mask.all()  # left padded
    assert len(b["prompts"]) == len(b["references"]) == B and all(isinstance(p, str) for p in b["prompts"])
    assert None in b["references"] and any(isinstance(r, str) for r in b["references"])


def test_fake_batch_is_seeded(tiny_tokenizer):
    a, b = (fake_batch("sft", tokenizer=tiny_tokenizer, seed=1) for _ in range(2))
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["input_ids"], fake_batch("sft", tokenizer=tiny_tokenizer, seed=2)["input_ids"])
    with pytest.raises(ValueError, match="unknown data kind"):
        fake_batch("pairs", tokenizer=tiny_tokenizer)


@pytest.mark.parametrize("name,kind", [("sft", "sft"), ("dpo", "preference"), ("rrhf", "ranked")])
def test_builtin_compute_loss_backpropagates(name, kind):
    algo = make_algorithm(name)
    assert algo.data_kind == kind and algo.run.cfg.algo.name == name
    assert (algo.run.reference is not None) == type(algo).needs_reference
    batch = fake_batch(kind, tokenizer=algo.run.tokenizer)
    before = [p.detach().clone() for p in algo.run.policy.parameters()]
    loss, metrics = algo.run.forward(algo.compute_loss, batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    algo.run.backward(loss)
    out = algo.run.optimizer_step()
    assert out["grad_norm"] > 0 and out["lr"] == algo.run.cfg.trainer.lr
    assert any(not torch.equal(a, p) for a, p in zip(before, algo.run.policy.parameters()))
    assert all(p.grad is None for p in algo.run.policy.parameters())  # zeroed after the step


@dataclass
class _ScaledCfg:
    scale: float = 1.0  # multiplies the loss

    def __post_init__(self):
        check(self, scale="> 0")


class _Scaled(Algorithm):
    data_kind = "sft"

    def setup(self):
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def extra_modules(self):
        holder = torch.nn.Module()
        holder.bias = self.bias
        return [holder]

    def compute_loss(self, batch):
        d = self.run.sequence_logprobs(self.run.policy, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss = -self.cfg.scale * d["mean"].mean() + self.bias ** 2 - self.bias
        self.run.log({"scaled/ntokens": float(d["ntokens"].sum())})
        return loss, {"loss": loss.detach()}


SPEC = AlgorithmSpec("scaled_test", _ScaledCfg, _Scaled, "test algorithm")


def test_uninstalled_spec_with_overrides_and_extra_modules():
    algo = make_algorithm(SPEC, ["algo.scale=2.0", "model.fused_logprobs=false"])
    assert isinstance(algo.cfg, _ScaledCfg) and algo.cfg.scale == 2.0
    assert algo.run.reference is None and not algo.run.fused
    batch = fake_batch("sft", tokenizer=algo.run.tokenizer)
    loss, _ = algo.run.forward(algo.compute_loss, batch)
    algo.run.backward(loss)
    algo.run.optimizer_step()
    assert algo.bias.item() > 0  # the extra module is trained
    assert algo.run.extra["logged"][0][1]["scaled/ntokens"] > 0
    # the trainer's default train_step runs on the stand-in too
    metrics = algo.train_step([batch, batch])
    assert {"loss", "grad_norm", "lr"} <= set(metrics)


def test_range_check_and_run_context():
    from alignkit.errors import UserError

    with pytest.raises(UserError, match="algo.scale"):
        make_run(["algo.scale=-1"], algo=SPEC)
    run = make_run(algo="dpo", reference=False)
    assert run.reference is None and str(run.device) == "cpu" and run.is_main_process
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(run.all_reduce_sum(t), t)
    assert run.cfg.model.name == "tiny" and run.output_dir.is_dir()
