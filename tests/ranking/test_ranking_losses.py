"""PRO, RRHF and CoH losses against hand-computed values (arithmetic in each docstring)."""
import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses.coh import coh_loss
from alignkit.losses.pro import pro_loss
from alignkit.losses.rrhf import rrhf_loss


def t(x, **kw):
    return torch.tensor(x, dtype=torch.float64, **kw)


# --------------------------------------------------------------------------------------------
# PRO
# --------------------------------------------------------------------------------------------
def pro_by_hand(s, S, r, sft_weight=0.05, constant=False):
    """Loop-over-k transcription of docs/algorithms.md for one prompt (python floats)."""
    order = sorted(range(len(r)), key=lambda i: -r[i])
    s, S, r = [s[i] for i in order], [S[i] for i in order], [r[i] for i in order]
    n = len(r)
    rank = 0.0
    for k in range(n - 1):
        T = {i: (1.0 if constant else r[k] - r[i]) for i in range(k + 1, n)}
        Tk = max(T.values())
        z = [s[k] * Tk] + [s[i] * T[i] for i in T]
        rank += math.log(sum(math.exp(v) for v in z)) - s[k] * Tk
    return rank + sft_weight * (n - 1) ** 2 * (-S[0])


def test_pro_docstring_example():
    """r = [2, 1, 0], s = [-1, -2, -3]:
    k=0: T = (T_0, T_1, T_2) = (2, 1, 2), logits (-2, -2, -6) -> log(2 + e^-4) = 0.702263;
    k=1: T = (1, 1), logits (-2, -3) -> log(1 + e^-1) = 0.313262. L_rank = 1.015525.
    SFT (weight 0.05, n = 3, S_0 = -4): 0.05 * 4 * 4 = 0.8."""
    loss, m = pro_loss(t([[-1.0, -2.0, -3.0]]), t([[-4.0, -6.0, -9.0]]), t([[2.0, 1.0, 0.0]]))
    assert m["loss/rank"].item() == pytest.approx(math.log(2 + math.exp(-4)) + math.log(1 + math.exp(-1)))
    assert m["loss/rank"].item() == pytest.approx(1.015525, abs=1e-6)
    assert m["loss/sft"].item() == pytest.approx(0.8)
    assert loss.item() == pytest.approx(1.815525, abs=1e-6)
    assert m["rank_accuracy"].item() == 1.0


def test_pro_n2_is_bradley_terry_scaled_by_reward_gap():
    """n = 2: T_1 = T_0 = r_0 - r_1 = d, L = logsumexp(d s_0, d s_1) - d s_0 = -log sigmoid(d (s_0 - s_1)).
    Candidates are passed in either order (PRO sorts them)."""
    g = torch.Generator().manual_seed(0)
    s = -torch.rand(8, 2, generator=g, dtype=torch.float64) * 3
    S = s * 10
    r = torch.randn(8, 2, generator=g, dtype=torch.float64)
    loss, m = pro_loss(s, S, r, sft_weight=0.0)
    hi = r.argmax(1, keepdim=True)
    lo = 1 - hi
    d = r.gather(1, hi) - r.gather(1, lo)
    bt = -F.logsigmoid(d * (s.gather(1, hi) - s.gather(1, lo))).mean()
    assert loss.item() == pytest.approx(bt.item(), rel=1e-12)
    # and the SFT term: weight * (n-1)^2 * -S_best
    _, m = pro_loss(s, S, r, sft_weight=0.5)
    assert m["loss/sft"].item() == pytest.approx((0.5 * -S.gather(1, hi)).mean().item())


def test_pro_matches_loop_transcription_on_random_lists():
    g = torch.Generator().manual_seed(1)
    s = -torch.rand(5, 4, generator=g, dtype=torch.float64) * 2
    S = s * 7
    r = torch.randn(5, 4, generator=g, dtype=torch.float64)
    loss, _ = pro_loss(s, S, r)
    want = sum(pro_by_hand(s[b].tolist(), S[b].tolist(), r[b].tolist()) for b in range(5)) / 5
    assert loss.item() == pytest.approx(want, rel=1e-10)


def test_pro_padding_equals_shorter_list():
    """A padded slot (valid=False, even holding NaN) changes nothing, and n counts valid ones."""
    s = t([[-1.0, -2.0, float("nan")], [-1.5, -0.5, -3.0]])
    S = t([[-3.0, -5.0, float("nan")], [-6.0, -2.0, -9.0]])
    r = t([[0.3, 0.9, 5.0], [1.0, 2.0, 0.0]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    s.requires_grad_(True)
    loss, _ = pro_loss(s, S, r, valid)
    want = (pro_by_hand([-1.0, -2.0], [-3.0, -5.0], [0.3, 0.9])
            + pro_by_hand([-1.5, -0.5, -3.0], [-6.0, -2.0, -9.0], [1.0, 2.0, 0.0])) / 2
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 2] == 0


def test_pro_ties_raise_or_use_constant_temperature():
    s, S, r = t([[-1.0, -2.0, -3.0]]), t([[-1.0, -2.0, -3.0]]), t([[1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="constant_temperature"):
        pro_loss(s, S, r)
    loss, m = pro_loss(s, S, r, sft_weight=0.0, constant_temperature=True)
    # T = 1 everywhere; stable order keeps (s=-1, s=-2, s=-3):
    # k=0: log(e^-1 + e^-2 + e^-3) + 1; k=1: log(e^-2 + e^-3) + 2
    want = math.log(math.exp(-1) + math.exp(-2) + math.exp(-3)) + 1 + math.log(math.exp(-2) + math.exp(-3)) + 2
    assert loss.item() == pytest.approx(want)
    # a tie with padding does not count
    pro_loss(s, S, r, torch.tensor([[True, False, True]]))


def test_pro_gradient_prefers_higher_reward():
    s = t([[-2.0, -2.0]]).requires_grad_(True)
    loss, _ = pro_loss(s, s * 5, t([[1.0, 0.0]]), sft_weight=0.0)
    loss.backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 1]  # descent raises s_best, lowers s_worse


# --------------------------------------------------------------------------------------------
# RRHF
# --------------------------------------------------------------------------------------------
def test_rrhf_docstring_example():
    """S = [-4, -9, -2], len = [2, 3, 2], r = [1, 2, 0] -> p = [-2, -3, -1];
    hinge pairs (worse, better): (0,1) 1, (2,1) 2, (2,0) 1 -> L_rank = 4; best = 1 -> L_sft = 9/3 = 3."""
    loss, m = rrhf_loss(t([[-4.0, -9.0, -2.0]]), t([[2, 3, 2]]), t([[1.0, 2.0, 0.0]]))
    assert m["loss/rank"].item() == pytest.approx(4.0)
    assert m["loss/sft"].item() == pytest.approx(3.0)
    assert loss.item() == pytest.approx(7.0)
    assert m["rank_accuracy"].item() == 0.0
    loss, _ = rrhf_loss(t([[-4.0, -9.0, -2.0]]), t([[2, 3, 2]]), t([[1.0, 2.0, 0.0]]), rank_weight=0.5)
    assert loss.item() == pytest.approx(5.0)


def test_rrhf_rank_term_zero_when_scores_ordered_like_rewards():
    """p = S/len = [-1, -2, -3] for r = [3, 2, 1]: every worse response already scores lower."""
    S, lens, r = t([[-2.0, -6.0, -3.0]]), t([[2, 3, 1]]), t([[3.0, 2.0, 1.0]])
    loss, m = rrhf_loss(S, lens, r)
    assert m["loss/rank"].item() == 0.0
    assert m["rank_accuracy"].item() == 1.0
    assert loss.item() == pytest.approx(1.0)  # best is index 0: -(-2)/2


def test_rrhf_length_penalty_ties_and_padding():
    """alpha = 0 compares sums: S = [-4, -3] with r = [1, 0] -> hinge max(0, -3 - -4) = 1.
    Ties give no pair and the first maximal reward is the best; padded slots are ignored."""
    S, lens, r = t([[-4.0, -3.0]]), t([[4, 1]]), t([[1.0, 0.0]])
    assert rrhf_loss(S, lens, r, length_penalty=0.0)[1]["loss/rank"].item() == pytest.approx(1.0)
    assert rrhf_loss(S, lens, r, length_penalty=1.0)[1]["loss/rank"].item() == 0.0  # p = [-1, -3]
    loss, m = rrhf_loss(t([[-4.0, -3.0, -100.0]]), t([[4, 1, 1]]), t([[1.0, 1.0, 9.0]]),
                        torch.tensor([[True, True, False]]))
    assert m["loss/rank"].item() == 0.0
    assert m["loss/sft"].item() == pytest.approx(1.0)  # first of the tied best: 4/4


# --------------------------------------------------------------------------------------------
# Chain of Hindsight
# --------------------------------------------------------------------------------------------
def test_coh_docstring_example_and_lm_mix():
    """logp = [[-1,-2,-3],[-4,-5,-6]], mask [[0,1,1],[1,0,0]] -> (2+3+4)/3 = 3;
    LM term on the same with a full mask: 21/6 = 3.5, weight 0.2 -> 3 + 0.7."""
    lp = t([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[False, True, True], [True, False, False]])
    loss, m = coh_loss(lp, mask)
    assert loss.item() == pytest.approx(3.0)
    assert m["ntokens"].item() == 3
    loss, m = coh_loss(lp, mask, lm_token_logps=lp, lm_mask=torch.ones_like(mask), lm_weight=0.2)
    assert m["loss/lm"].item() == pytest.approx(3.5)
    assert loss.item() == pytest.approx(3.7)
