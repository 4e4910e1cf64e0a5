"""dpo_loss, ppo_loss, value_loss, gae and masked_whiten: parity with the reference (fwd and bwd),
hand-computed values, gradcheck, opcheck, torch.compile, validation and determinism."""
import math

import pytest
import torch
import torch.nn.functional as F

from _ops_testing import DEVICES, HALF, assert_close

DPO_TYPES = ["sigmoid", "hinge", "ipo", "robust"]
AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


def _dpo_inputs(B, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, generator=g, dtype=torch.float64) * 4 - 20).to(device) for _ in range(4)]


def _dpo_run(fn, xs, dtype, **kw):
    xs = [x.to(dtype).requires_grad_() for x in xs]
    losses, cr, rj = fn(*xs, **kw)
    w = torch.linspace(0.5, 1.5, losses.numel(), dtype=losses.dtype, device=losses.device)
    (losses * w).sum().backward()
    return [losses, cr, rj] + [x.grad for x in xs]


# ---------------------------------------------------------------------------------------------- DPO
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("loss_type", DPO_TYPES)
@pytest.mark.parametrize("B", [1, 7, 1000])
def test_dpo_parity(kernels, reference, device, dtype, loss_type, B):
    xs = _dpo_inputs(B, dtype, device)
    kw = dict(beta=0.2, loss_type=loss_type, label_smoothing=0.1 if loss_type != "hinge" else 0.0)
    got = _dpo_run(kernels.dpo_loss, xs, dtype, **kw)
    ref = _dpo_run(reference.dpo_loss, xs, dtype, **kw)
    ref64 = _dpo_run(reference.dpo_loss, xs, torch.float64, **kw) if dtype in HALF else [None] * 7
    for k, r, r64 in zip(got, ref, ref64):
        assert_close(k, r, dtype, r64)
    assert not got[1].requires_grad and not got[2].requires_grad  # rewards are detached metrics


def test_dpo_hand_computed(kernels):
    # h = (-1 - -2) - (-1.5 - -1.5) = 1; beta = 0.1: loss = -log σ(0.1) = log(1 + e^-0.1) = 0.644397
    pc, pr, rc, rr = (torch.tensor([v], requires_grad=True) for v in (-1.0, -2.0, -1.5, -1.5))
    losses, cr, rj = kernels.dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-6)
    assert cr.item() == pytest.approx(0.05) and rj.item() == pytest.approx(-0.05)
    losses.sum().backward()
    # d/dpc = -β σ(-βh) = -0.1 · σ(-0.1) = -0.0475021
    assert pc.grad.item() == pytest.approx(-0.1 / (1 + math.exp(0.1)), abs=1e-7)
    assert pr.grad.item() == pytest.approx(-pc.grad.item()) and rr.grad.item() == pytest.approx(pc.grad.item())
    # ipo: (h - 1/(2β))^2 = (1 - 5)^2 = 16; hinge: relu(1 - 0.1) = 0.9
    assert kernels.dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo")[0].item() == pytest.approx(16.0)
    assert kernels.dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="hinge")[0].item() == pytest.approx(0.9)


def test_dpo_gradcheck_and_validation(kernels):
    xs = [x.requires_grad_() for x in _dpo_inputs(5, torch.float64, "cpu")]
    for lt in DPO_TYPES:
        assert torch.autograd.gradcheck(
            lambda *a: kernels.dpo_loss(*a, beta=0.3, loss_type=lt, label_smoothing=0.2)[0], xs)
    with pytest.raises(RuntimeError, match="loss_type"):
        kernels.dpo_loss(*xs, loss_type="nope")
    with pytest.raises(RuntimeError, match="ref_rejected.*shape"):
        kernels.dpo_loss(*xs[:3], torch.zeros(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="policy_rejected.*dtype"):
        kernels.dpo_loss(xs[0], xs[1].float(), *xs[2:])
    with pytest.raises(RuntimeError, match="beta"):
        kernels.dpo_loss(*xs, beta=0.0)


# ---------------------------------------------------------------------------------------------- PPO
def _ppo_inputs(B, T, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = lp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    ref = lp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    ent = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0] = False  # a row with no valid token
    return [t.to(device) for t in (lp, old, adv, mask, ref, ent)]


PPO_CONFIGS = [
    dict(),
    dict(clip_eps_high=0.28, dual_clip=3.0),
    dict(kl_coef=0.05, kl_estimator="k1", entropy_coef=0.01),
    dict(kl_coef=0.05, kl_estimator="k3", dual_clip=2.0, entropy_coef=0.02),
]


def _ppo_run(fn, ins, dtype, cfg, agg):
    lp, old, adv, mask, ref, ent = ins
    lp = lp.to(dtype).requires_grad_()
    ent = ent.to(dtype).requires_grad_()
    use_ref, use_ent = "kl_coef" in cfg, "entropy_coef" in cfg
    loss, stats = fn(lp, old.to(dtype), adv.to(dtype), mask, ref_logprobs=ref.to(dtype) if use_ref else None,
                     entropy=ent if use_ent else None, agg=agg, **cfg)
    loss.backward()
    return [loss, *stats.values(), lp.grad, ent.grad if use_ent else torch.zeros(())]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", PPO_CONFIGS, ids=["plain", "dual-clip", "k1-entropy", "k3-all"])
@pytest.mark.parametrize("agg", AGGS)
def test_ppo_parity(kernels, reference, device, dtype, cfg, agg):
    ins = _ppo_inputs(6, 33, dtype, device)
    got = _ppo_run(kernels.ppo_loss, ins, dtype, cfg, agg)
    ref = _ppo_run(reference.ppo_loss, ins, dtype, cfg, agg)
    for k, r in zip(got, ref):
        assert_close(k, r, dtype)


def test_ppo_bf16(kernels, reference):
    ins = _ppo_inputs(4, 50, torch.bfloat16, "cpu")
    cfg = PPO_CONFIGS[3]
    got = _ppo_run(kernels.ppo_loss, ins, torch.bfloat16, cfg, "token-mean")
    ref = _ppo_run(reference.ppo_loss, ins, torch.bfloat16, cfg, "token-mean")
    ref64 = _ppo_run(reference.ppo_loss, ins, torch.float64, cfg, "token-mean")
    assert_close(got[0], ref[0], torch.bfloat16, ref64[0])


def test_ppo_hand_computed(kernels):
    # ratio = e^{log 1.5} = 1.5 > 1.2: A = 1 → pg = max(-1.5, -1.2) = -1.2 (clipped, no grad)
    # ratio = 1 for the second token: pg = -A = 2 for A = -2, grad = -A·ratio = 2; token 3 masked
    lp = torch.tensor([[math.log(1.5), 0.0, 0.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -2.0, 5.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = kernels.ppo_loss(lp, old, adv, mask)
    assert loss.item() == pytest.approx((-1.2 + 2.0) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approx_kl"].item() == pytest.approx(0.5 * math.log(1.5) ** 2 / 2)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, 1.0, 0.0]]))
    # dual clip c = 3 caps a negative advantage's loss at -c·A: A = -2, ratio = e^2 → min(2e^2, 6) = 6
    loss, _ = kernels.ppo_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), torch.tensor([[-2.0]]),
                               torch.ones(1, 1), dual_clip=3.0)
    assert loss.item() == pytest.approx(6.0)


def test_ppo_gradcheck(kernels):
    lp, old, adv, mask, ref, ent = _ppo_inputs(3, 7, torch.float64, "cpu")
    lp.requires_grad_(), ent.requires_grad_()
    for agg in AGGS:
        def f(lp, ent):
            return kernels.ppo_loss(lp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1, kl_estimator="k3",
                                    entropy=ent, entropy_coef=0.03, dual_clip=2.5, agg=agg)[0]
        assert torch.autograd.gradcheck(f, (lp, ent))


def test_ppo_validation(kernels):
    lp, old, adv, mask, _, _ = _ppo_inputs(2, 5, torch.float32, "cpu")
    lp, old, adv = lp.float(), old.float(), adv.float()
    with pytest.raises(RuntimeError, match="old_logprobs.*shape"):
        kernels.ppo_loss(lp, old[:, :4], adv, mask)
    with pytest.raises(RuntimeError, match="mask.*shape"):
        kernels.ppo_loss(lp, old, adv, mask[:1])
    with pytest.raises(RuntimeError, match="agg"):
        kernels.ppo_loss(lp, old, adv, mask, agg="sum")
    with pytest.raises(RuntimeError, match="kl_estimator"):
        kernels.ppo_loss(lp, old, adv, mask, kl_estimator="k2")
    with pytest.raises(RuntimeError, match="advantages.*dtype"):
        kernels.ppo_loss(lp, old, adv.double(), mask)
    with pytest.raises(RuntimeError, match="logprobs.*floating"):
        kernels.ppo_loss(lp.long(), old, adv, mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_positions_do_not_leak(kernels, device, dtype):
    """Garbage (NaN, inf) at masked positions changes nothing: the vectorised kernels select, they do
    not multiply by the mask (NaN · 0 = NaN). T = 19 leaves a partial vector step at each row's end."""
    lp, old, adv, mask, ref, ent = (t.to(dtype) if t.is_floating_point() else t
                                    for t in _ppo_inputs(4, 19, torch.float64, device))
    dirty = [t.masked_fill(~mask, float("nan")) for t in (lp, old, adv, ref, ent)]
    dirty[1] = dirty[1].masked_fill(~mask & (torch.arange(19, device=device) % 2 == 0), float("inf"))
    outs = []
    for x_lp, x_old, x_adv, x_ref, x_ent in ((lp, old, adv, ref, ent), dirty):
        x_lp, x_ent = x_lp.clone().requires_grad_(), x_ent.clone().requires_grad_()
        loss, stats = kernels.ppo_loss(x_lp, x_old, x_adv, mask, ref_logprobs=x_ref, kl_coef=0.1,
                                       kl_estimator="k3", entropy=x_ent, entropy_coef=0.01, dual_clip=3.0)
        v = x_lp.detach().clone().requires_grad_()
        vloss, vstats = kernels.value_loss(v, x_old, x_adv, mask, clip_eps=0.2)
        (loss + vloss).backward()
        outs.append([loss, *stats.values(), vloss, vstats["clipfrac"], x_lp.grad, x_ent.grad, v.grad])
    for clean, garbage in zip(*outs):
        assert torch.isfinite(garbage).all()
        torch.testing.assert_close(garbage, clean, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------- value
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("clip_eps", [0.2, None])
@pytest.mark.parametrize("agg", AGGS)
def test_value_loss_parity(kernels, reference, device, clip_eps, agg):
    lp, old, adv, mask, _, _ = _ppo_inputs(5, 17, torch.float64, device)
    outs = []
    for fn in (kernels.value_loss, reference.value_loss):
        v = lp.clone().requires_grad_()
        loss, stats = fn(v, old, adv, mask, clip_eps=clip_eps, agg=agg)
        loss.backward()
        outs.append((loss, stats["clipfrac"], v.grad))
    for k, r in zip(*outs):
        torch.testing.assert_close(k, r)


def test_value_loss_gradcheck(kernels):
    v, old, ret, mask, _, _ = _ppo_inputs(3, 6, torch.float64, "cpu")
    v.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: kernels.value_loss(v, old, ret, mask, clip_eps=0.1)[0], (v,))


# ---------------------------------------------------------------------------------------------- GAE
def test_gae_hand_computed(kernels):
    """1x4 row with padding in the middle; γ = 0.9, λ = 0.5.

    t=3: δ = 3 + 0 - 2 = 1, A = 1.  t=2 is padding: passes V_next = 2 and A_next = 1 through.
    t=1: δ = 2 + 0.9·2 - 1 = 2.8, A = 2.8 + 0.45·1 = 3.25.
    t=0: δ = 1 + 0.9·1 - 0.5 = 1.4, A = 1.4 + 0.45·3.25 = 2.8625.
    """
    r = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    v = torch.tensor([[0.5, 1.0, 9.0, 2.0]])
    m = torch.tensor([[1, 1, 0, 1]])
    adv, ret = kernels.gae(r, v, m, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[2.8625, 3.25, 0.0, 1.0]]))
    torch.testing.assert_close(ret, torch.tensor([[3.3625, 4.25, 0.0, 3.0]]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("B,T", [(1, 1), (3, 17), (16, 300)])
def test_gae_parity(kernels, reference, device, dtype, B, T):
    g = torch.Generator().manual_seed(1)
    r, v = (torch.randn(B, T, generator=g).to(device, dtype) for _ in range(2))
    m = (torch.rand(B, T, generator=g) > 0.3).to(device)
    got = kernels.gae(r, v, m, gamma=0.99, lam=0.9)
    ref = reference.gae(r, v, m, gamma=0.99, lam=0.9)
    for k, rf in zip(got, ref):
        tol = dict(atol=1e-2, rtol=1e-2) if dtype in HALF else {}
        torch.testing.assert_close(k, rf, **tol)


def test_gae_left_right_padding_and_float_mask(kernels, reference):
    r, v = torch.randn(2, 8), torch.randn(2, 8)
    m = torch.tensor([[0, 0, 1, 1, 1, 0, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    for k, rf in zip(kernels.gae(r, v, m), reference.gae(r, v, m)):
        torch.testing.assert_close(k, rf)


# ------------------------------------------------------------------------------------------- whiten
def test_masked_whiten_hand_computed(kernels):
    """Valid [1, 2, 3, 4] (100 is masked): mean 2.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.

    y = (x - 2.5) / sqrt(5/3 + 1e-8) on valid positions, 0 elsewhere. With upstream g = [1, 0, 0, 0, 0]:
    mean_g = 1/4, Σ g·(x-μ) = -1.5, so dx = rstd·(g - 1/4) - (x - μ)·rstd³·(-1.5)/3 on valid positions.
    """
    x = torch.tensor([1.0, 2.0, 3.0, 100.0, 4.0], dtype=torch.float64, requires_grad=True)
    m = torch.tensor([1, 1, 1, 0, 1])
    rstd = (5 / 3 + 1e-8) ** -0.5
    y = kernels.masked_whiten(x, m)
    torch.testing.assert_close(y, torch.tensor([-1.5, -0.5, 0.5, 0.0, 1.5], dtype=torch.float64) * rstd,
                               atol=1e-15, rtol=1e-14)
    (dx,) = torch.autograd.grad(y, x, torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64))
    xc = torch.tensor([-1.5, -0.5, 0.5, 0.0, 1.5], dtype=torch.float64)
    g = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    want = (rstd * (g - 0.25) + xc * rstd ** 3 * 1.5 / 3) * m
    torch.testing.assert_close(dx, want, atol=1e-15, rtol=1e-14)


def _whiten_run(fn, x, m, g, dtype):
    x = x.to(dtype).requires_grad_()
    y = fn(x, m)
    (dx,) = torch.autograd.grad(y, x, g.to(dtype))
    return y, dx


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1,), (3, 17), (2, 3, 7), (5, 40001)])  # 40001·5: many reduction chunks
def test_masked_whiten_parity(kernels, reference, device, dtype, shape):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(*shape, generator=gen, dtype=torch.float64) * 3 + 5).to(device)
    m = (torch.rand(*shape, generator=gen) > 0.3).to(device)
    g = torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)
    got = _whiten_run(kernels.masked_whiten, x, m, g, dtype)
    ref = _whiten_run(reference.masked_whiten, x, m, g, dtype)
    ref64 = _whiten_run(reference.masked_whiten, x, m, g, torch.float64) if dtype in HALF else (None, None)
    for k, r, r64, what in zip(got, ref, ref64, ("y", "dx")):
        assert k.dtype == dtype and k.shape == x.shape
        assert_close(k, r, dtype, r64, what=what)


def test_masked_whiten_strided_float_mask_and_stats(kernels, reference):
    base = torch.randn(6, 40)
    x = base[:, ::3]  # not contiguous
    m = (torch.rand(6, 14) > 0.5).float()  # any nonzero value is valid
    torch.testing.assert_close(kernels.masked_whiten(x, m), reference.masked_whiten(x, m.bool()))
    y, stats = torch.ops.alignkit.masked_whiten_fwd(x, m)
    valid = x[m.bool()].double()
    torch.testing.assert_close(stats.double(), torch.stack([valid.mean(), (valid.var() + 1e-8).rsqrt(),
                                                            torch.tensor(float(valid.numel()), dtype=torch.float64)]),
                               atol=1e-6, rtol=1e-6)
    assert y[m.bool()].mean().abs() < 1e-6 and y[m.bool()].std().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("valid", [[], [7]])
def test_masked_whiten_degenerate_masks(kernels, device, valid):
    """No valid position, or one: the output and the gradient are 0 (no NaN from 0/0 or n - 1 = 0)."""
    x = torch.randn(3, 5, device=device, requires_grad=True)
    m = torch.zeros(15, dtype=torch.bool)
    m[valid] = True
    m = m.view(3, 5).to(device)
    y = kernels.masked_whiten(x, m)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert torch.equal(y, torch.zeros_like(y)) and torch.equal(dx, torch.zeros_like(dx))


@pytest.mark.parametrize("device", DEVICES)
def test_masked_whiten_ignores_garbage_at_masked_positions(kernels, device):
    """NaN/inf in x or in the upstream gradient at masked positions change no bit of y or dx."""
    x = torch.randn(4, 9000, device=device)
    m = torch.rand(4, 9000, device=device) > 0.5
    every_third = torch.arange(9000, device=device) % 3 == 0
    dirty_x = x.masked_fill(~m, float("nan")).masked_fill(~m & every_third, float("inf"))
    g = torch.randn(4, 9000, device=device)
    outs = []
    for xi, gi in ((x, g), (dirty_x, g.masked_fill(~m, float("nan")))):
        xi = xi.clone().requires_grad_()
        y = kernels.masked_whiten(xi, m)
        outs.append((y, torch.autograd.grad(y, xi, gi)[0]))
    (y0, dx0), (y1, dx1) = outs
    assert torch.equal(y0, y1) and torch.equal(dx0, dx1)
    assert torch.isfinite(y1).all() and torch.isfinite(dx1).all()


def test_masked_whiten_gradcheck_and_validation(kernels):
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    m = torch.rand(4, 9) > 0.4
    assert torch.autograd.gradcheck(lambda x: kernels.masked_whiten(x, m), (x,))
    with pytest.raises(RuntimeError, match="mask.*shape"):
        kernels.masked_whiten(x, m[:, :4])
    with pytest.raises(RuntimeError, match="x.*floating"):
        kernels.masked_whiten(torch.ones(4, 9, dtype=torch.long), m)
    with pytest.raises(RuntimeError, match="grad.*shape"):
        torch.ops.alignkit.masked_whiten_bwd(torch.ones(3), x.detach(), m, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="stats.*shape"):
        torch.ops.alignkit.masked_whiten_bwd(x.detach(), x.detach(), m, torch.zeros(2, dtype=torch.float64))


# --------------------------------------------------------------------------- opcheck / compile / misc
def test_opcheck_losses(kernels):
    ops = torch.ops.alignkit
    pc, pr, rc, rr = (x.float().requires_grad_() for x in _dpo_inputs(5, torch.float32, "cpu"))
    torch.library.opcheck(ops.dpo_loss_fwd, (pc, pr, rc, rr, 0.1, "sigmoid", 0.0))
    torch.library.opcheck(ops.dpo_loss_fwd, (pc, pr, rc, rr, 0.1, "robust", 0.1))
    torch.library.opcheck(ops.dpo_loss_bwd, (torch.randn(5), torch.rand(5)))
    lp, old, adv, mask, ref, ent = (t.float() if t.is_floating_point() else t
                                    for t in _ppo_inputs(3, 5, torch.float32, "cpu"))
    args = (-1.0, 0.05, "k3", 0.01, "seq-mean-token-mean")
    torch.library.opcheck(ops.ppo_loss_fwd, (lp.requires_grad_(), old, adv, mask, ref,
                                             ent.requires_grad_(), 0.2, 0.3, *args))
    torch.library.opcheck(ops.ppo_loss_bwd, (torch.tensor(1.0), lp.detach(), old, adv, mask, ref,
                                             ent.detach(), 0.2, 0.3, *args))
    torch.library.opcheck(ops.value_loss_fwd, (lp, old, adv, mask, 0.2, "token-mean"))
    torch.library.opcheck(ops.value_loss_bwd, (torch.tensor(1.0), lp.detach(), old, adv, mask, 0.2,
                                               "token-mean"))
    torch.library.opcheck(ops.gae, (adv, old, mask, 1.0, 0.95))
    torch.library.opcheck(ops.masked_whiten_fwd, (adv.clone().requires_grad_(), mask))
    _, stats = ops.masked_whiten_fwd(adv, mask)
    torch.library.opcheck(ops.masked_whiten_bwd, (torch.randn_like(adv), adv, mask, stats))


def test_torch_compile_losses(kernels, reference):
    lp, old, adv, mask, ref, ent = _ppo_inputs(4, 9, torch.float32, "cpu")
    lp, old, adv, ref = (t.float() for t in (lp, old, adv, ref))
    pcs = [x.float() for x in _dpo_inputs(4, torch.float32, "cpu")]

    def step(ops, lp, pcs):
        adv_w = ops.masked_whiten(ops.gae(adv, old, mask, gamma=1.0, lam=0.95)[0], mask)
        loss, stats = ops.ppo_loss(lp, old, adv_w, mask, ref_logprobs=ref, kl_coef=0.1)
        vloss, _ = ops.value_loss(lp, old, adv, mask)
        dloss = ops.dpo_loss(*pcs, beta=0.1)[0].mean()
        return loss + vloss + dloss + stats["clipfrac"]

    compiled = torch.compile(lambda lp, pcs: step(kernels, lp, pcs), fullgraph=True, backend="aot_eager")
    outs = []
    for fn in (compiled, lambda lp, pcs: step(reference, lp, pcs)):
        x = lp.clone().requires_grad_()
        p = [t.clone().requires_grad_() for t in pcs]
        out = fn(x, p)
        out.backward()
        outs.append((out, x.grad, p[0].grad))
    for k, r in zip(*outs):
        torch.testing.assert_close(k, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("op", ["dpo", "ppo", "value", "whiten"])
def test_cpu_ops_same_bits_on_any_thread_count(kernels, op):
    """Work is split over fixed chunks or rows, never at thread-count-dependent offsets: sizes that are
    not multiples of the 8-lane step or of a chunk give bit-identical outputs and gradients on 1-3 threads."""
    if op == "dpo":
        ins = _dpo_inputs(40003, torch.float32, "cpu")
        run = lambda: _dpo_run(kernels.dpo_loss, ins, torch.float32, beta=0.1, label_smoothing=0.1)  # noqa: E731
    elif op == "ppo":
        ins = _ppo_inputs(37, 1029, torch.float32, "cpu")
        run = lambda: _ppo_run(kernels.ppo_loss, ins, torch.float32, PPO_CONFIGS[3], "token-mean")  # noqa: E731
    elif op == "value":
        v, old, ret, m = (t.float() if t.is_floating_point() else t for t in _ppo_inputs(37, 1029, torch.float32, "cpu")[:4])

        def run():
            leaf = v.clone().requires_grad_()
            loss, stats = kernels.value_loss(leaf, old, ret, m, clip_eps=0.2)
            loss.backward()
            return [loss, stats["clipfrac"], leaf.grad]
    else:
        x, m, g = torch.randn(3, 50001), torch.rand(3, 50001) > 0.2, torch.randn(3, 50001)
        run = lambda: _whiten_run(kernels.masked_whiten, x, m, g, torch.float32)  # noqa: E731
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append([t.clone() for t in run()])
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b), (op, (a != b).nonzero()[:5].tolist())


def test_losses_deterministic(kernels):
    ins = _ppo_inputs(64, 512, torch.float32, "cpu")
    a = _ppo_run(kernels.ppo_loss, ins, torch.float32, PPO_CONFIGS[3], "token-mean")
    b = _ppo_run(kernels.ppo_loss, ins, torch.float32, PPO_CONFIGS[3], "token-mean")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
