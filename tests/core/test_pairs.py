"""Shared-prompt packing (alignkit.pairs) gives the standard forward's log-probs, rewards and gradients;
a precomputed reference gives the live reference's losses, fresh and resumed."""
import json

import pytest
import torch

from alignkit.config.compose import compose_config
from alignkit.pairs import pack_pairs
from alignkit.testing import fake_batch, make_run
from alignkit.trainer import train


def _pair_batch(run, B=5, T=48, seed=0):
    return fake_batch("preference", batch_size=B, seq_len=T, tokenizer=run.tokenizer, seed=seed)


def test_pack_pairs_layout_on_a_hand_made_pair():
    # prompt [5, 6, 7], chosen [8, 9], rejected [10]; right padding with 0
    batch = {"chosen_input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "chosen_attention_mask": torch.tensor([[1] * 5]),
             "chosen_labels": torch.tensor([[-100, -100, -100, 8, 9]]),
             "rejected_input_ids": torch.tensor([[5, 6, 7, 10, 0]]),
             "rejected_attention_mask": torch.tensor([[1, 1, 1, 1, 0]]),
             "rejected_labels": torch.tensor([[-100, -100, -100, 10, -100]])}
    p = pack_pairs(batch)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]
    assert p.source.tolist() == [2, 3, 2] and p.target.tolist() == [8, 9, 10] and p.owner.tolist() == [0, 0, 1]
    assert p.last.tolist() == [4, 5]
    allow = p.attention_mask[0, 0]
    assert allow[5].tolist() == [True, True, True, False, False, True]  # rejected sees the prompt, not chosen
    assert allow[4].tolist() == [True, True, True, True, True, False]


def test_pack_pairs_refuses_pairs_with_different_prompts():
    batch = {"chosen_input_ids": torch.tensor([[5, 6, 8]]), "chosen_attention_mask": torch.tensor([[1, 1, 1]]),
             "chosen_labels": torch.tensor([[-100, -100, 8]]), "rejected_input_ids": torch.tensor([[5, 7, 9]]),
             "rejected_attention_mask": torch.tensor([[1, 1, 1]]), "rejected_labels": torch.tensor([[-100, -100, 9]])}
    assert pack_pairs(batch) is None


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logprobs_and_gradients_match_the_standard_forward(attn):
    packed = make_run([f"model.attn_implementation={attn}"], algo="dpo")
    plain = make_run([f"model.attn_implementation={attn}", "model.shared_prompt=false"], algo="dpo")
    batch = _pair_batch(packed)
    assert packed.packed_pairs(dict(batch)) is not None
    a, b = packed.pair_logprobs(packed.policy, dict(batch)), plain.pair_logprobs(plain.policy, dict(batch))
    for k in ("sum", "mean", "ntokens"):
        for x, y in zip(a[k], b[k]):
            torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-5)
    (a["sum"][0] - 2 * a["sum"][1]).sum().backward()
    (b["sum"][0] - 2 * b["sum"][1]).sum().backward()
    for (n, p), q in zip(packed.policy.named_parameters(), plain.policy.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=n)
    ref = packed.pair_logprobs(packed.reference, dict(batch))  # reference = starting policy
    torch.testing.assert_close(ref["sum"][0], a["sum"][0].detach(), atol=2e-5, rtol=1e-5)


def test_packed_rewards_match_the_standard_forward():
    packed, plain = make_run(algo="rm"), make_run(["model.shared_prompt=false"], algo="rm")
    batch = _pair_batch(packed, seed=3)
    for x, y in zip(packed.pair_rewards(packed.policy, dict(batch)), plain.pair_rewards(plain.policy, dict(batch))):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-5)


FAST = ["model=tiny", "data=hh-rlhf-small", "data.sources.0.max_examples=48", "data.sources.0.eval_size=8",
        "data.max_length=96", "data.max_prompt_length=48", "trainer.batch_size=4", "trainer.lr=3e-3",
        "trainer.max_steps=6", "trainer.eval_steps=3", "logger=none", "trainer.progress=false"]


def _losses(run_dir):
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [(r["step"], k, r[k]) for r in rows for k in ("train/loss", "eval/loss") if k in r]


def test_precomputed_reference_trains_like_the_live_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    live = train(compose_config(FAST + [f"trainer.run_dir={tmp_path / 'live'}"]))
    pre = train(compose_config(FAST + [f"trainer.run_dir={tmp_path / 'pre'}", "trainer.precompute_reference=true"]))
    assert (pre.output_dir / "reference_logprobs.safetensors").is_file()
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) == 1
    for (s1, k1, v1), (s2, k2, v2) in zip(_losses(live.output_dir), _losses(pre.output_dir), strict=True):
        assert (s1, k1) == (s2, k2) and v1 == pytest.approx(v2, abs=1e-5)
    # a second run reads the cached table: same losses again
    again = train(compose_config(FAST + [f"trainer.run_dir={tmp_path / 'again'}", "trainer.precompute_reference=true"]))
    assert _losses(again.output_dir) == _losses(pre.output_dir)


def test_precomputed_reference_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    over = FAST + ["trainer.precompute_reference=true", "trainer.save_steps=3"]
    whole = train(compose_config(over + [f"trainer.run_dir={tmp_path / 'whole'}"]))
    stopped = tmp_path / "part"
    with pytest.raises(RuntimeError):
        train(compose_config(over + [f"trainer.run_dir={stopped}"]),
              step_callback=lambda s: (_ for _ in ()).throw(RuntimeError("stop")) if s == 4 else None)
    resumed = train(compose_config(over + [f"trainer.run_dir={stopped}", "trainer.resume=auto"]))
    tail = lambda d: [x for x in _losses(d) if x[0] > 3]  # noqa: E731
    assert [(s, k) for s, k, _ in tail(resumed.output_dir)] == [(s, k) for s, k, _ in tail(whole.output_dir)]
    for (_, _, a), (_, _, b) in zip(tail(resumed.output_dir), tail(whole.output_dir)):
        assert a == pytest.approx(b, abs=1e-6)


def test_precompute_reference_refuses_prompt_algorithms(tmp_path):
    from alignkit.errors import UserError

    with pytest.raises(UserError, match="precompute_reference needs preference pairs"):
        train(compose_config(FAST + ["algo=ppo", "algo.reward.function=char_frequency",
                                     "trainer.precompute_reference=true", f"trainer.run_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "r").exists()
