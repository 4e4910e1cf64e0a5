"""GRPO / RLOO loss variants on hand-computed values: Dr. GRPO's constant normaliser, DAPO's dynamic
sampling and overlong shaping/filtering, GSPO's sequence ratio, truncated importance sampling (TIS)
of the engine/trainer gap; and a short run with dynamic sampling and sequence ratios on the tiny model."""
import dataclasses
import json
import math

import pytest
import torch

from alignkit import ops
from alignkit.api import Rollout, UserError
from alignkit.config.compose import compose_config
from alignkit.losses import engine_gap_metrics, truncated_is_weights
from alignkit.plugins.grpo import (
    engine_logprobs, group_rows, gspo_loss, overlong_shaping, prompt_subsets, replace_rows, zero_spread_groups,
)
from alignkit.testing import fake_batch, make_algorithm
from alignkit.trainer import train

T = torch.tensor
E = math.exp
SMALL = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
         "model.tiny.intermediate_size=64"]
REWARD = [*SMALL, "algo.reward.function=char_frequency", "algo.generation.max_new_tokens=4", "algo.beta=0"]


@pytest.fixture(scope="module")
def grpo():
    """A GRPO algorithm on the tiny model (no KL term, 4-token budget, groups of 2)."""
    return make_algorithm("grpo", [*REWARD, "algo.num_samples=2"])


def _with(algo, **changes):
    algo.cfg = dataclasses.replace(algo.cfg, **changes)
    return algo


# -- Dr. GRPO -------------------------------------------------------------------------------------
def test_constant_normaliser_divides_by_budget_times_sequences(grpo):
    """Ratio 1 (logp = old), so pg_t = -A_t. Row 0: 3 tokens, A = 1; row 1: 1 token, A = -2.
    Sum of token losses: 3·(-1) + 1·2 = -1; budget 4 tokens, 2 sequences: -1 / (4·2) = -0.125.
    (token-mean: -1 / 4 = -0.25; seq-mean-token-mean: (-1 + 2) / 2 = 0.5.)
    Gradient: -A_t / 8 -> row 0 tokens -0.125, row 1 token 0.25, padding 0."""
    algo = _with(grpo, agg="seq-mean-token-sum-norm", importance="token")
    old = T([[-1.0, -2.0, -0.5, -3.0], [-0.7, -1.0, -1.0, -1.0]])
    mask = T([[1, 1, 1, 0], [1, 0, 0, 0]]).bool()
    adv = T([[1.0] * 4, [-2.0] * 4])
    logp = old.clone().requires_grad_(True)
    loss, _ = algo.policy_loss(logp, old, adv, mask, old, None)
    assert loss.item() == pytest.approx(-0.125, abs=1e-7)
    loss.backward()
    assert torch.allclose(logp.grad, T([[-0.125, -0.125, -0.125, 0.0], [0.25, 0.0, 0.0, 0.0]]), atol=1e-7)
    for agg, want in (("token-mean", -0.25), ("seq-mean-token-mean", 0.5)):
        assert _with(algo, agg=agg).policy_loss(old, old, adv, mask, old, None)[0].item() == pytest.approx(want)


def test_constant_normaliser_has_no_length_bias(grpo):
    """Doubling a response's length with the same advantage doubles its loss (no 1/|o| factor)."""
    algo = _with(grpo, agg="seq-mean-token-sum-norm", importance="token")
    old, adv = torch.zeros(1, 4), torch.full((1, 4), -1.0)
    short = algo.policy_loss(old, old, adv, T([[1, 1, 0, 0]]).bool(), old, None)[0]
    long = algo.policy_loss(old, old, adv, T([[1, 1, 1, 1]]).bool(), old, None)[0]
    assert short.item() == pytest.approx(2 / 4) and long.item() == pytest.approx(4 / 4)


# -- GSPO -------------------------------------------------------------------------------------------
GSPO_CASE = dict(
    old=T([[-1.0, -2.0, -9.0], [-1.0, -1.0, -1.0], [-2.0, -9.0, -9.0]]),
    delta=T([[0.1, -0.3, 5.0], [0.2, 0.4, 0.3], [0.3, 0.0, 0.0]]),  # logp - old (masked entries ignored)
    mask=T([[1, 1, 0], [1, 1, 1], [1, 0, 0]]).bool(),
    adv=T([[1.0] * 3, [1.0] * 3, [-1.0] * 3]),
)


def test_gspo_loss_and_gradient_hand_computed():
    """s_i = exp(mean of logp - old over the response), clipped to [0.8, 1.2]:
    row 0: s = e^-0.1 = 0.904837, A = 1: -s (unclipped);
    row 1: s = e^0.3 = 1.349859, A = 1: max(-s, -1.2) = -1.2 (clipped, no gradient);
    row 2: s = e^0.3, A = -1: max(s, 1.2) = s (unclipped).
    seq-mean-token-mean: (-0.904837 - 1.2 + 1.349859) / 3. Gradient w.r.t. logp_t of row i:
    -A_i s_i / (3 |o_i|): row 0 -0.904837 / 6 per token, row 1 0, row 2 +1.349859 / 3."""
    c = GSPO_CASE
    logp = (c["old"] + c["delta"]).requires_grad_(True)
    loss, st = gspo_loss(logp, c["old"], c["adv"], c["mask"], clip_eps=0.2, clip_eps_high=0.2,
                         agg="seq-mean-token-mean")
    s0, s1 = E(-0.1), E(0.3)
    assert loss.item() == pytest.approx((-s0 - 1.2 + s1) / 3, abs=1e-6)
    loss.backward()
    want = T([[-s0 / 6, -s0 / 6, 0.0], [0.0, 0.0, 0.0], [s1 / 3, 0.0, 0.0]])
    assert torch.allclose(logp.grad, want, atol=1e-6)
    assert st["clipfrac"].item() == pytest.approx(3 / 6)  # row 1's three tokens of six


def test_gspo_token_form_equals_the_sequence_objective():
    """The GSPO-token surrogate reduced by seq-mean-token-mean has the value and gradient of
    -(1/G) Σ_i min(s_i A_i, clip(s_i) A_i) with s_i differentiated directly."""
    c = GSPO_CASE
    logp = (c["old"] + c["delta"]).requires_grad_(True)
    loss, _ = gspo_loss(logp, c["old"], c["adv"], c["mask"], clip_eps=0.2, clip_eps_high=0.2,
                        agg="seq-mean-token-mean")
    loss.backward()
    ours = logp.grad.clone()
    logp.grad = None
    m = c["mask"].float()
    s = torch.exp(((logp - c["old"]) * m).sum(-1) / m.sum(-1))  # [3], with gradient
    a = c["adv"][:, 0]
    direct = torch.maximum(-a * s, -a * s.clamp(0.8, 1.2)).mean()
    direct.backward()
    assert loss.item() == pytest.approx(direct.item(), abs=1e-6)
    assert torch.allclose(ours, logp.grad, atol=1e-6)


def test_importance_sequence_uses_its_own_small_clip(grpo):
    """importance=sequence clips with seq_clip_eps / seq_clip_eps_high (3e-4 / 4e-4): a sequence ratio
    of e^0.001 = 1.0010005 with A = 1 is clipped to 1.0004, so the loss is -1.0004 and no gradient flows;
    the per-token path with clip_eps 0.2 leaves the same ratio unclipped."""
    algo = _with(grpo, importance="sequence", agg="seq-mean-token-mean")
    old = T([[-1.0, -2.0]])
    logp = (old + 0.001).requires_grad_(True)
    mask, adv = T([[1, 1]]).bool(), torch.ones(1, 2)
    loss, st = algo.policy_loss(logp, old, adv, mask, old, None)
    assert loss.item() == pytest.approx(-1.0004, abs=1e-6) and st["clipfrac"].item() == 1.0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(1, 2))
    token = _with(algo, importance="token").policy_loss(logp, old, adv, mask, old, None)[0]
    assert token.item() == pytest.approx(-E(0.001), abs=1e-6)


# -- TIS ----------------------------------------------------------------------------------------------
TIS_OLD = T([[-1.0, -2.0, -0.5, -1.0, -3.0]])
TIS_ENGINE = T([[-1.5, -0.5, -0.5, -0.8, 0.0]])
TIS_MASK = T([[1, 1, 1, 1, 0]]).bool()


def test_truncated_is_weights_and_gap_metrics():
    """w = min(exp(old - engine), 1.5): [min(e^0.5, 1.5), e^-1.5, 1, e^-0.2, (masked) 0];
    gap = mean |old - engine| = (0.5 + 1.5 + 0 + 0.2) / 4 = 0.55."""
    w = truncated_is_weights(TIS_OLD, TIS_ENGINE, TIS_MASK, 1.5)
    want = [1.5, E(-1.5), 1.0, E(-0.2), 0.0]
    assert torch.allclose(w, T([want]), atol=1e-6)
    m = engine_gap_metrics(TIS_OLD, TIS_ENGINE, TIS_MASK, 1.5)
    assert m["rollout/logprob_gap_abs"] == pytest.approx(0.55)
    assert m["rollout/tis_weight"] == pytest.approx(sum(want) / 4)
    assert engine_gap_metrics(TIS_OLD, TIS_ENGINE, TIS_MASK)["rollout/tis_weight"] == pytest.approx(
        (E(0.5) + E(-1.5) + 1 + E(-0.2)) / 4)  # no cap


def test_tis_weighted_advantage_is_the_weighted_surrogate_exactly():
    """pg_t = max(-A r, -A clip(r, 0.8, 1.2)) weighted by w_t, token mean over 4 tokens.
    r = exp(logp - old) = [e^0.1, 1, e^-0.05, e^0.5]; A = [2, -1, 0.5, 1]; w as above.
    Tokens 0-2 unclipped: w·(-A r) = [-1.5·2·e^0.1, e^-1.5, -0.5·e^-0.05]; token 3 clipped: -1.2·e^-0.2.
    Gradient -A w r / 4 on the unclipped tokens, 0 on the clipped one and on padding."""
    delta = T([[0.1, 0.0, -0.05, 0.5, 0.0]])
    adv = T([[2.0, -1.0, 0.5, 1.0, 7.0]])
    logp = (TIS_OLD + delta).requires_grad_(True)
    w = truncated_is_weights(TIS_OLD, TIS_ENGINE, TIS_MASK, 1.5)
    loss, _ = ops.ppo_loss(logp, TIS_OLD, adv * w, TIS_MASK, clip_eps=0.2)
    terms = [-1.5 * 2 * E(0.1), E(-1.5), -0.5 * E(-0.05), -1.2 * E(-0.2)]
    assert loss.item() == pytest.approx(sum(terms) / 4, abs=1e-6)
    loss.backward()
    want = T([[-2 * 1.5 * E(0.1) / 4, E(-1.5) / 4, -0.5 * E(-0.05) / 4, 0.0, 0.0]])
    assert torch.allclose(logp.grad, want, atol=1e-6)


def test_tis_without_engine_logprobs_names_the_engine(grpo):
    ro = _rollout([[5, 6, 7]], prompt_len=1)
    with pytest.raises(UserError, match=r"algo.tis_cap=2.0 needs .* rollout.engine=hf reports none"):
        engine_logprobs(ro, grpo.run, 2.0)


def test_tis_in_train_step_scales_the_gradient_and_logs_the_gap():
    """With engine log-probs 0.1 below the trainer's on every token, w_t = e^0.1 everywhere (cap 2):
    the policy gradient (no KL term) is e^0.1 times the uncorrected one on the same rollout (same
    weights and iteration: the optimiser step is left out), rollout/logprob_gap_abs = 0.1 and
    rollout/tis_weight = e^0.1."""
    batch = fake_batch("prompt", batch_size=2, seq_len=12)
    batch["index"] = torch.arange(2)
    algo = make_algorithm("grpo", [*REWARD, "algo.generation.top_k=20"])
    sample, grads = algo.rollout, []

    def with_engine(*a, **k):
        ro = sample(*a, **k)
        trainer = algo.logprobs(algo.run.policy, ro)[0].detach()
        ro.engine_logprobs = torch.where(ro.mask, trainer - 0.1, torch.zeros_like(trainer))
        return ro

    def backward(loss):
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in algo.run.policy.parameters() if p.grad is not None]))
        algo.run.policy.zero_grad(set_to_none=True)

    algo.rollout = with_engine
    algo.run._trainer.backward = backward
    algo.run._trainer.optimizer_step = lambda: {}
    plain = algo.train_step([batch])
    m = _with(algo, tis_cap=2.0).train_step([batch])
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[1], E(0.1) * grads[0], rtol=1e-3, atol=1e-7)
    assert m["rollout/logprob_gap_abs"] == pytest.approx(0.1, abs=1e-4)
    assert m["rollout/tis_weight"] == pytest.approx(E(0.1), abs=1e-4)
    assert plain["rollout/tis_weight"] == pytest.approx(E(0.1), abs=1e-4)  # reported without the correction too


def test_ppo_tis_needs_engine_logprobs_and_logs_the_gap():
    """PPO: tis_cap with the hf engine (no log-probs) stops at the first step naming the engine; with
    engine log-probs 0.1 below the trainer's the gap metrics are 0.1 and e^0.1."""
    batch = fake_batch("prompt", batch_size=2, seq_len=12)
    batch["index"] = torch.arange(2)
    algo = make_algorithm("ppo", [*SMALL, "algo.reward.function=char_frequency", "algo.generation.max_new_tokens=4",
                                  "algo.ppo_epochs=1", "algo.tis_cap=2.0"])
    with pytest.raises(UserError, match=r"algo.tis_cap=2.0 needs .* rollout.engine=hf reports none"):
        algo.train_step([batch])
    sample = algo.rollout

    def with_engine(*a, **k):
        ro = sample(*a, **k)
        trainer = algo.logprobs(algo.run.policy, ro)[0].detach()
        ro.engine_logprobs = torch.where(ro.mask, trainer - 0.1, torch.zeros_like(trainer))
        return ro

    algo.rollout = with_engine
    m = algo.train_step([batch])
    assert m["rollout/logprob_gap_abs"] == pytest.approx(0.1, abs=1e-4)
    assert m["rollout/tis_weight"] == pytest.approx(E(0.1), abs=1e-4)


# -- DAPO: overlong shaping and filtering -----------------------------------------------------------
def test_overlong_shaping_hand_computed():
    """L_max 8, buffer 4, penalty 0.5: 0 up to 4 tokens, then (4 - L) / 4 · 0.5, -0.5 at 8 and beyond."""
    got = overlong_shaping(T([3, 4, 5, 6, 8, 9]), 8, 4, 0.5)
    assert torch.allclose(got, T([0.0, 0.0, -0.125, -0.25, -0.5, -0.5]))


def test_overlong_filter_leaves_truncated_responses_out(grpo):
    ro = _rollout([[5, 6, 7], [5, 6, 7]], prompt_len=1)
    ro.has_eos = T([True, False])
    keep = T([True, True])
    assert _with(grpo, overlong_filter=False).loss_mask(ro, keep).sum(1).tolist() == [2, 2]
    assert _with(grpo, overlong_filter=True).loss_mask(ro, keep).sum(1).tolist() == [2, 0]
    assert _with(grpo, overlong_filter=False).loss_mask(ro, T([False, True])).sum(1).tolist() == [0, 2]


# -- DAPO: dynamic sampling -----------------------------------------------------------------------
def _rollout(rows, prompt_len, scores=None, engine=False):
    """A rollout of the given token rows (prompt = first ``prompt_len`` tokens), right padded with 0."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = T(r)
        attn[i, :len(r)] = 1
        labels[i, prompt_len:len(r)] = T(r[prompt_len:])
    n = len(rows)
    lp = torch.where(labels[:, 1:] != -100, -1.0 - torch.arange(n).unsqueeze(1).float(), 0.0) if engine else None
    return Rollout(input_ids=ids, attention_mask=attn, labels=labels, prompt_lengths=torch.full((n,), prompt_len),
                   response_lengths=T([len(r) - prompt_len for r in rows]), has_eos=torch.ones(n, dtype=torch.bool),
                   prompts=[f"p{i}" for i in range(n)], completions=[f"c{i}" for i in range(n)], group_size=2,
                   scores=None if scores is None else T(scores, dtype=torch.float32), engine_logprobs=lp)


def test_zero_spread_groups_and_rows():
    assert zero_spread_groups(T([1.0, 1.0, 0.0, 1.0, 0.5, 0.5]), 2).tolist() == [True, False, True]
    assert group_rows(T([0, 2]), 3).tolist() == [0, 1, 2, 6, 7, 8]


def test_replace_rows_pads_to_the_wider_rollout():
    ro = _rollout([[1, 2, 3], [1, 2, 4], [9, 8, 7], [9, 8, 6]], prompt_len=2, scores=[0, 0, 1, 2], engine=True)
    new = _rollout([[1, 2, 5, 5], [1, 2, 6]], prompt_len=2, scores=[3, 4], engine=True)
    out = replace_rows(ro, T([0, 1]), new, pad_id=0)
    assert out.input_ids.tolist() == [[1, 2, 5, 5], [1, 2, 6, 0], [9, 8, 7, 0], [9, 8, 6, 0]]
    assert out.labels[:, 2:].tolist() == [[5, 5], [6, -100], [7, -100], [6, -100]]
    assert out.attention_mask.sum(1).tolist() == [4, 3, 3, 3]
    assert out.scores.tolist() == [3, 4, 1, 2] and out.completions == ["c0", "c1", "c2", "c3"]
    assert out.response_lengths.tolist() == [2, 1, 1, 1]
    # engine log-probs follow their rows ([N, T-1], 0 off the response)
    assert out.engine_logprobs.tolist() == [[0, -1, -1], [0, -2, 0], [0, -3, 0], [0, -4, 0]]
    assert replace_rows(ro, T([0, 1]), _rollout([[1, 2, 5], [1, 2, 6]], 2, [3, 4]), 0).engine_logprobs is None


def test_prompt_subsets_select_across_micro_batches():
    b1 = fake_batch("prompt", batch_size=2, seq_len=12, seed=1)
    b2 = fake_batch("prompt", batch_size=2, seq_len=12, seed=2)
    b1["index"], b2["index"] = T([10, 11]), T([12, 13])
    subs = prompt_subsets([b1, b2], T([1, 2]))
    assert [s["index"].tolist() for s in subs] == [[11], [12]]
    assert subs[0]["prompts"] == [b1["prompts"][1]] and subs[1]["prompts"] == [b2["prompts"][0]]
    for s, b, i in ((subs[0], b1, 1), (subs[1], b2, 0)):  # the same tokens, leading padding dropped
        assert s["prompt_attention_mask"][0, 0] == 1
        tokens = b["prompt_input_ids"][i][b["prompt_attention_mask"][i].bool()]
        assert s["prompt_input_ids"][0].tolist() == tokens.tolist()


def _scripted(algo, script):
    """Replace ``algo.rollout``: attempt k returns rollouts with the scores ``script[k]`` (one list per
    group asked for, in order) and records the prompt indices it was asked for."""
    calls = []

    def rollout(micro_batches, num_samples=None, *, attempt=0):
        index = torch.cat([b["index"] for b in micro_batches]).tolist()
        calls.append((attempt, index))
        scores = [s for g in script[attempt][:len(index)] for s in g]
        rows = [[3, 4 + attempt, 5 + i] for i in range(len(scores))]
        ro = _rollout(rows, prompt_len=2, scores=scores)
        algo.raw_scores = T(scores, dtype=torch.float32)
        return ro

    algo.rollout = rollout
    return calls


def test_dynamic_sampling_resamples_then_drops(grpo):
    """Groups (of 2): prompt 0 [1, 1] (no spread), prompt 1 [0, 1], prompt 2 [0, 0]. Attempt 1 resamples
    prompts 0 and 2: [1, 1] and [0, 1] (prompt 2 fixed). Attempt 2 resamples prompt 0: still [1, 1],
    so it is dropped. resampled = 2 + 1 = 3 groups; dropped = 1."""
    algo = _with(grpo, dynamic_sampling=True, max_resample=2)
    batch = {"prompt_input_ids": torch.ones(3, 2, dtype=torch.long), "prompt_attention_mask": torch.ones(3, 2),
             "prompts": ["a", "b", "c"], "references": [None] * 3, "index": T([0, 1, 2])}
    calls = _scripted(algo, {0: [[1, 1], [0, 1], [0, 0]], 1: [[1, 1], [0, 1]], 2: [[1, 1]]})
    ro, keep, m = algo.sample_groups([batch])
    assert calls == [(0, [0, 1, 2]), (1, [0, 2]), (2, [0])]
    assert ro.scores.tolist() == [1, 1, 0, 1, 0, 1] and algo.raw_scores.tolist() == [1, 1, 0, 1, 0, 1]
    assert keep.tolist() == [False, False, True, True, True, True]
    assert ro.input_ids[:, 1].tolist() == [6, 6, 4, 4, 5, 5]  # which attempt each row came from
    assert m == {"rollout/resampled": 3.0, "rollout/groups_dropped": 1.0}
    calls = _scripted(_with(algo, max_resample=0), {0: [[1, 1], [0, 1], [0, 0]]})
    assert algo.sample_groups([batch])[2] == {"rollout/resampled": 0.0, "rollout/groups_dropped": 2.0}


def test_all_groups_dropped_skips_the_update(grpo):
    """No group has any spread and none may be resampled: no token enters the loss, so there is no
    optimiser step (an AdamW step on zero gradients would still move the weights) and no loss."""
    algo = _with(grpo, dynamic_sampling=True, max_resample=0)
    batch = fake_batch("prompt", batch_size=2, seq_len=12)
    batch["index"] = torch.arange(2)
    _scripted(algo, {0: [[0.5, 0.5], [0, 0]]})
    before = [p.detach().clone() for p in algo.run.policy.parameters()]
    steps = algo.run._trainer.step
    m = algo.train_step([batch])
    assert m["pg/skipped_update"] == 1.0 and m["rollout/groups_dropped"] == 2.0 and "loss" not in m
    assert algo.run._trainer.step == steps
    assert all(torch.equal(a, b) for a, b in zip(before, algo.run.policy.parameters()))


# -- a short run ------------------------------------------------------------------------------------
def test_grpo_run_with_dynamic_sampling_and_sequence_ratios(tmp_path):
    """Two iterations, two minibatches each (so GSPO's ratio moves off 1), 2-token responses whose
    char_frequency score is often 0 for a whole group (so groups get resampled): the run finishes and
    logs the new metrics."""
    tiny = ["model=tiny", *SMALL, "data=hh-rlhf-small", "data.sources.0.max_examples=24",
            "data.sources.0.eval_size=4", "data.max_length=96", "data.max_prompt_length=64"]
    fast = ["trainer.eval_at_start=false", "trainer.eval_steps=0", "trainer.max_eval_examples=4",
            "trainer.progress=false", "trainer.lr_scheduler=constant", "logger.tensorboard=false", "logger.plot=false"]
    cfg = compose_config(["algo=grpo", *tiny, *fast, "algo.reward.function=char_frequency",
                          "algo.generation.max_new_tokens=2", "algo.generation.top_k=20", "algo.num_samples=2",
                          "algo.dynamic_sampling=true", "algo.max_resample=1", "algo.importance=sequence",
                          "algo.num_minibatches=2", "algo.overlong_buffer=1", "trainer.batch_size=4",
                          "trainer.max_steps=2", f"trainer.run_dir={tmp_path}"])
    result = train(cfg)
    rows = [json.loads(line) for line in open(result.output_dir / "metrics.jsonl")]
    hist = [r for r in rows if "train/rollout/resampled" in r]
    assert len(hist) == 2
    assert sum(r["train/rollout/resampled"] for r in hist) > 0
    for r in hist:
        assert 0 <= r["train/rollout/groups_dropped"] <= 4
        assert r.get("train/pg/skipped_update", 0.0) == 1.0 or math.isfinite(r["train/loss"])
