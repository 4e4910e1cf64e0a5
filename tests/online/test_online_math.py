"""Online RLHF arithmetic on hand-computed values: reward shaping, KL estimators,
GAE, whitening, clipped policy/value losses (through alignkit.ops), adaptive KL,
explained variance, GRPO/RLOO advantages and RAFT selection."""
import math

import pytest
import torch

from alignkit import ops
from alignkit.losses.ppo import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    explained_variance,
    group_advantages,
    kl_per_token,
    last_valid_index,
    sequence_kl,
    shape_rewards,
)
from alignkit.plugins.raft import raft_select

T = torch.tensor


def test_kl_estimators():
    logp, ref = T([[-1.0, -2.0, -5.0]]), T([[-2.0, -2.0, 0.0]])
    mask = T([[True, True, False]])
    # k1 = logp - ref = [1, 0, (masked)]
    assert torch.allclose(kl_per_token(logp, ref, mask, "k1"), T([[1.0, 0.0, 0.0]]))
    # k3 with d = ref - logp = -1: e^-1 + 1 - 1 = 0.36788; d = 0: 0
    assert torch.allclose(kl_per_token(logp, ref, mask, "k3"), T([[math.exp(-1), 0.0, 0.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="k1"):
        kl_per_token(logp, ref, mask, "k2")


def test_shape_rewards_puts_score_on_last_response_token():
    kl = T([[0.5, 0.1, 0.3, 0.0], [0.0, 2.0, 1.0, 0.4]])
    mask = T([[1, 1, 0, 0], [0, 1, 1, 1]]).bool()  # row 0 right padded, row 1 left padded
    r = shape_rewards(T([1.0, -2.0]), kl, mask, kl_coef=0.2)
    # row 0: [-0.1, -0.02 + 1, 0, 0]; row 1: [0, -0.4, -0.2, -0.08 - 2]
    assert torch.allclose(r, T([[-0.1, 0.98, 0.0, 0.0], [0.0, -0.4, -0.2, -2.08]]))
    assert last_valid_index(mask).tolist() == [1, 3]
    assert torch.allclose(sequence_kl(kl, mask), T([0.6, 3.4]))


def test_shape_rewards_empty_row_gets_nothing():
    r = shape_rewards(T([5.0]), T([[0.1, 0.1]]), T([[False, False]]), kl_coef=1.0)
    assert torch.equal(r, torch.zeros(1, 2))


def test_missing_eos_penalty():
    s = T([1.0, 2.0, 3.0])
    eos = T([True, False, True])
    assert torch.allclose(apply_missing_eos_penalty(s, eos, 1.5), T([1.0, 0.5, 3.0]))
    assert apply_missing_eos_penalty(s, eos, 0.0) is s


def test_gae_hand_computed():
    # gamma = 1, lam = 0.95; rewards [0, 0, 1], values [0.5, 0.6, 0.7]
    # t=2: d = 1 - 0.7 = 0.3, A = 0.3
    # t=1: d = 0.7 - 0.6 = 0.1, A = 0.1 + 0.95 * 0.3 = 0.385
    # t=0: d = 0.6 - 0.5 = 0.1, A = 0.1 + 0.95 * 0.385 = 0.46575
    adv, ret = ops.gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), T([[1, 1, 1]]).bool(), gamma=1.0, lam=0.95)
    assert torch.allclose(adv, T([[0.46575, 0.385, 0.3]]), atol=1e-6)
    assert torch.allclose(ret, T([[0.96575, 0.985, 1.0]]), atol=1e-6)


def test_gae_skips_masked_positions_and_discounts():
    # masked middle position passes V_next / A_next through and outputs 0
    # t=2: A = 1 - 0.7 = 0.3; t=0: d = 0 + 0.9 * 0.7 - 0.5 = 0.13, A = 0.13 + 0.9 * 0.5 * 0.3 = 0.265
    adv, ret = ops.gae(T([[0.0, 5.0, 1.0]]), T([[0.5, 9.0, 0.7]]), T([[1, 0, 1]]).bool(), gamma=0.9, lam=0.5)
    assert torch.allclose(adv, T([[0.265, 0.0, 0.3]]), atol=1e-6)
    assert torch.allclose(ret, T([[0.765, 0.0, 1.0]]), atol=1e-6)


def test_masked_whiten():
    # valid [1, 2, 3]: mean 2, unbiased variance 1 -> [-1, 0, 1]; padding -> 0
    w = ops.masked_whiten(T([[1.0, 2.0, 3.0, 100.0]]), T([[1, 1, 1, 0]]).bool())
    assert torch.allclose(w, T([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)


def test_ppo_clipping_and_dual_clip():
    # ratios [1.5, 0.5, 5] with advantages [1, -1, -1], eps 0.2, dual clip 3
    # tok0: max(-1.5, -1.2) = -1.2 (clipped); tok1: max(0.5, 0.8) = 0.8 (clipped);
    # tok2: max(5, 1.2) = 5 -> dual clip min(5, 3) = 3; token mean = (-1.2 + 0.8 + 3) / 3
    ratio = T([[1.5, 0.5, 5.0]])
    old = torch.zeros(1, 3)
    adv = T([[1.0, -1.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, st = ops.ppo_loss(ratio.log(), old, adv, mask, clip_eps=0.2, dual_clip=3.0)
    assert math.isclose(float(loss), (-1.2 + 0.8 + 3.0) / 3, rel_tol=1e-5)
    assert math.isclose(float(st["clipfrac"]), 2 / 3, rel_tol=1e-5)
    loss_nodual, _ = ops.ppo_loss(ratio.log(), old, adv, mask, clip_eps=0.2)
    assert math.isclose(float(loss_nodual), (-1.2 + 0.8 + 5.0) / 3, rel_tol=1e-5)


def test_value_loss_clipped():
    # V = 1.5, V_old = 1.0, R = 2.0, eps 0.2: unclipped (1.5-2)^2 = 0.25, clipped (1.2-2)^2 = 0.64
    # -> 0.5 * max = 0.32
    loss, st = ops.value_loss(T([[1.5]]), T([[1.0]]), T([[2.0]]), T([[True]]), clip_eps=0.2)
    assert math.isclose(float(loss), 0.32, rel_tol=1e-5)
    assert float(st["clipfrac"]) == 1.0


def test_adaptive_kl_controller():
    # KL 12 vs target 6: e = clip(1, -0.2, 0.2) = 0.2; 0.2 * (1 + 0.2 * 64 / 10000) = 0.200256
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert math.isclose(c.update(12.0, 64), 0.200256, rel_tol=1e-9)
    # KL 6.6: e = 0.1; 0.200256 * (1 + 0.1 * 100 / 10000) = 0.200456256
    assert math.isclose(c.update(6.6, 100), 0.200456256, rel_tol=1e-9)
    # KL 0: e = clip(-1) = -0.2; x (1 - 0.2 * 500 / 1000) = x * 0.9
    c2 = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert math.isclose(c2.update(0.0, 500), 0.09, rel_tol=1e-9)
    f = FixedKLController(0.3)
    assert f.update(100.0, 64) == 0.3
    c3 = AdaptiveKLController(1.0, 1.0, 1.0)
    c3.load_state_dict(c.state_dict())
    assert c3.value == c.value


def test_explained_variance():
    # returns [1, 2, 3], values [1, 2, 2]: Var(residual [0, 0, 1]) = 2/9, Var(returns) = 2/3 -> 1 - 1/3
    ev = explained_variance(T([[1.0, 2.0, 2.0, 7.0]]), T([[1.0, 2.0, 3.0, 0.0]]), T([[1, 1, 1, 0]]).bool())
    assert math.isclose(ev, 2 / 3, rel_tol=1e-9)
    assert math.isnan(explained_variance(T([[1.0]]), T([[1.0]]), T([[True]])))


def test_group_advantages():
    s = T([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    grpo = group_advantages(s, 3, "grpo")
    # group 1: mean 2, unbiased std 1 -> [-1, 0, 1] / (1 + 1e-4); group 2: all equal -> 0
    assert torch.allclose(grpo, T([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / 1.0001, atol=1e-6)
    assert torch.allclose(group_advantages(s, 3, "grpo", scale_by_std=False), T([-1.0, 0.0, 1.0, 0, 0, 0]))
    # RLOO: s_i - mean of the others: [1 - 2.5, 2 - 2, 3 - 1.5]
    assert torch.allclose(group_advantages(s, 3, "rloo"), T([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="group"):
        group_advantages(s, 4, "grpo")
    with pytest.raises(ValueError, match="grpo"):
        group_advantages(s, 3, "ppo")


def test_raft_select():
    s = T([1.0, 3.0, 2.0, 0.0])
    assert raft_select(s, 2, "local").tolist() == [1, 2]
    assert raft_select(s, 2, "global", alpha=0.25).tolist() == [1]
    assert raft_select(s, 2, "global").tolist() == [1, 2]  # alpha defaults to 1/K
    with pytest.raises(ValueError, match="local or global"):
        raft_select(s, 2, "best")


def test_score_normalizer_running_moments():
    from alignkit.losses import ScoreNormalizer

    n = ScoreNormalizer()
    # batch [1, 3]: mean 2, population std 1 -> [-1, 1]
    assert torch.allclose(n(T([1.0, 3.0])), T([-1.0, 1.0]), atol=1e-6)
    # then [5]: all scores [1, 3, 5], mean 3, std sqrt(8/3) -> (5 - 3) / 1.63299 = 1.22474
    assert torch.allclose(n(T([5.0])), T([1.224745]), atol=1e-5)
    assert math.isclose(n.mean, 3.0) and math.isclose(n.std, math.sqrt(8 / 3))
    m = ScoreNormalizer()
    m.load_state_dict(n.state_dict())
    assert torch.allclose(m(T([3.0])), n(T([3.0])))
