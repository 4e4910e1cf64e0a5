"""logprobs and fused_linear_logprobs: parity with the reference (fwd and bwd), odd shapes, strided
inputs, gradcheck, opcheck, torch.compile, validation, determinism and hand-computed values."""
import math
import os

import pytest
import torch

from _ops_testing import DEVICES, HALF, assert_close

SHAPES = [(1, 1), (1, 7), (5, 7), (3, 769), (2, 49152)]  # (N, V)


def _inputs(N, V, dtype, device, scale=3.0, ignore_frac=0.25, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g, dtype=torch.float64) * scale).to(device)
    labels = torch.randint(0, V, (N,), generator=g).to(device)
    labels[torch.rand(N, generator=g).to(device) < ignore_frac] = -100
    return logits.to(dtype), labels, logits


def _run(fn, logits, labels, **kw):
    x = logits.detach().requires_grad_()
    logp, ent = fn(x, labels, return_entropy=True, **kw)
    w = torch.linspace(-1, 1, logp.numel(), dtype=torch.float64).view_as(logp).to(logp.device)
    ((logp * w.to(logp.dtype)).sum() + (ent * w.flip(-1).to(ent.dtype)).sum()).backward()
    return logp, ent, x.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,V", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_parity(kernels, reference, device, dtype, N, V, temperature):
    logits, labels, logits64 = _inputs(N, V, dtype, device)
    got = _run(kernels.logprobs, logits, labels, temperature=temperature)
    ref = _run(reference.logprobs, logits, labels, temperature=temperature)
    ref64 = _run(reference.logprobs, logits64, labels, temperature=temperature) if dtype in HALF else None
    for name, k, r, i in zip(("logp", "entropy", "grad"), got, ref, range(3)):
        assert k.dtype == (torch.float32 if name != "grad" else dtype)
        assert_close(k, r, dtype if name == "grad" or dtype in HALF else torch.float32,
                     ref64[i] if ref64 else None, what=name)
    assert (got[0] <= 0).all()


def test_all_ignored_rows(kernels):
    logits = torch.randn(3, 11, requires_grad=True)
    labels = torch.full((3,), -100)
    logp, ent = kernels.logprobs(logits, labels, return_entropy=True)
    assert torch.equal(logp, torch.zeros(3)) and torch.equal(ent, torch.zeros(3))
    (logp.sum() + ent.sum()).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_strided_and_batched_inputs(kernels, reference):
    # the causal shift logits[:, :-1] is a non-flattenable view: read in place, no copy
    full = torch.randn(2, 6, 37, dtype=torch.float64)
    labels = torch.randint(0, 37, (2, 5))
    for view in (full[:, :-1], full[:, 1:], full.transpose(0, 1)[:5].transpose(0, 1),
                 full[..., ::2][:, :5, :18].contiguous().mT.contiguous().mT):
        lab = labels[..., : view.shape[1]].clamp(max=view.shape[-1] - 1)
        got = _run(kernels.logprobs, view, lab)
        ref = _run(reference.logprobs, view, lab)
        for k, r in zip(got, ref):
            torch.testing.assert_close(k, r)


def test_1d_logits(kernels, reference):
    x = torch.randn(9)
    torch.testing.assert_close(kernels.logprobs(x, torch.tensor(4)), reference.logprobs(x, torch.tensor(4)))


def test_gradcheck(kernels):
    logits = torch.randn(4, 13, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, -100, 12, 0])

    def f(x):
        return kernels.logprobs(x, labels, return_entropy=True, temperature=0.8)

    assert torch.autograd.gradcheck(f, (logits,))


def test_exact_values(kernels):
    V = 1000
    logp, ent = kernels.logprobs(torch.zeros(2, V), torch.tensor([3, 999]), return_entropy=True)
    torch.testing.assert_close(logp, torch.full((2,), -math.log(V)))
    torch.testing.assert_close(ent, torch.full((2,), math.log(V)))
    # stable for ±1e4 logits: one-hot distribution
    x = torch.full((1, 33), -1e4)
    x[0, 5] = 1e4
    logp, ent = kernels.logprobs(x, torch.tensor([5]), return_entropy=True)
    assert logp.item() == 0.0 and ent.abs().item() < 1e-6
    assert kernels.logprobs(x, torch.tensor([6])).item() == pytest.approx(-2e4)


def test_validation(kernels):
    x, y = torch.randn(3, 5), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match="labels.*int64|labels.*Long"):
        kernels.logprobs(x, y.int())
    with pytest.raises(RuntimeError, match=r"labels.*\[0, 5\)"):
        kernels.logprobs(x, torch.tensor([0, 5, 1]))
    with pytest.raises(RuntimeError, match=r"labels.*\[0, 5\)"):
        kernels.logprobs(x, torch.tensor([0, -1, 1]))
    with pytest.raises(RuntimeError, match="labels.*shape"):
        kernels.logprobs(x, torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="logits.*floating"):
        kernels.logprobs(torch.ones(3, 5, dtype=torch.long), y)
    with pytest.raises(RuntimeError, match="temperature"):
        kernels.logprobs(x, y, temperature=0.0)


def test_determinism_across_runs_and_threads(kernels):
    x, y, _ = _inputs(64, 3001, torch.float32, "cpu")
    a = kernels.logprobs(x, y, return_entropy=True)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = kernels.logprobs(x, y, return_entropy=True)
    finally:
        torch.set_num_threads(n)
    c = kernels.logprobs(x, y, return_entropy=True)
    for p, q, r in zip(a, b, c):
        assert torch.equal(p, q) and torch.equal(p, r)


def test_opcheck(kernels):
    x = torch.randn(4, 9, requires_grad=True)
    y = torch.tensor([0, 8, -100, 3])
    torch.library.opcheck(torch.ops.alignkit.logprobs_fwd, (x, y, -100, 0.9, True))
    logp, lse, ent = torch.ops.alignkit.logprobs_fwd(x.detach(), y, -100, 0.9, True)
    torch.library.opcheck(torch.ops.alignkit.logprobs_bwd,
                          (torch.randn(4), torch.randn(4), x.detach(), y, lse, ent, -100, 0.9))


def test_torch_compile(kernels, reference):
    x = torch.randn(2, 3, 50, requires_grad=True)
    y = torch.randint(0, 50, (2, 3))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(x, y):
        logp, ent = kernels.logprobs(x, y, return_entropy=True)
        return (logp.sum(-1) - 0.1 * ent.mean()).sum()

    f(x, y).backward()
    g = x.grad.clone()
    x.grad = None
    logp, ent = reference.logprobs(x, y, return_entropy=True)
    (logp.sum(-1) - 0.1 * ent.mean()).sum().backward()
    torch.testing.assert_close(g, x.grad)


# ------------------------------------------------------------------------------------------------
# fused_linear_logprobs
# ------------------------------------------------------------------------------------------------
def _fused_inputs(N, H, V, dtype, device, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64) / math.sqrt(H) * 2
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, V, (N,), generator=g)
    y[torch.rand(N, generator=g) < 0.25] = -100
    return [t.to(device) if t is not None else None for t in (h, w, b, y)]


def _run_fused(fn, h, w, b, y, dtype, **kw):
    h = h.to(dtype).requires_grad_()
    w = w.to(dtype).requires_grad_()
    b = b.to(dtype).requires_grad_() if b is not None else None
    logp, ent = fn(h, w, y, bias=b, return_entropy=True, **kw)
    wt = torch.linspace(-1, 1, logp.numel(), dtype=torch.float64).view_as(logp).to(logp.device)
    ((logp * wt.to(logp.dtype)).sum() + (ent * wt.flip(-1).to(ent.dtype)).sum()).backward()
    return logp, ent, h.grad, w.grad, (b.grad if b is not None else torch.zeros(()))


@pytest.fixture(params=[None, "1024"], ids=["one-tile", "many-tiles"])
def tile_bytes(request, monkeypatch):
    if request.param:
        monkeypatch.setenv("ALIGNKIT_TILE_BYTES", request.param)
    return request.param


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N,H,V", [(1, 8, 1), (7, 16, 7), (33, 24, 769), (4, 8, 1000)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_parity(kernels, reference, tile_bytes, device, dtype, N, H, V, bias):
    h, w, b, y = _fused_inputs(N, H, V, dtype, device, bias)
    got = _run_fused(kernels.fused_linear_logprobs, h, w, b, y, dtype, temperature=0.9)
    ref = _run_fused(reference.fused_linear_logprobs, h, w, b, y, dtype, temperature=0.9)
    ref64 = _run_fused(reference.fused_linear_logprobs, h, w, b, y, torch.float64, temperature=0.9)
    for name, k, r, r64 in zip(("logp", "entropy", "grad_hidden", "grad_weight", "grad_bias"), got, ref, ref64):
        if dtype in HALF:
            assert_close(k, r, dtype, r64, what=name)
        else:
            torch.testing.assert_close(k, r.to(k.dtype), atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N,H,V", [(50, 300, 4100), (301, 4100, 37)])
def test_fused_wide_shapes_and_threads(kernels, reference, threads, N, H, V):
    """Wide heads and vocabularies that are not multiples of any vector width (the tile GEMMs' K
    and N dimensions, H = 4100 and V = 4100): results agree with float64 on 1 and 2 threads and
    repeat bitwise."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        h, w, b, y = _fused_inputs(N, H, V, torch.float32, "cpu", bias=False, seed=3)
        h, w = h.float(), w.float()  # the kernel's own inputs, fresh leaves for each run below
        got = _run_fused(kernels.fused_linear_logprobs, h.clone(), w.clone(), b, y, torch.float32)
        ref64 = _run_fused(reference.fused_linear_logprobs, h, w, b, y, torch.float64)
        for name, k, r in list(zip(("logp", "entropy", "grad_hidden", "grad_weight"), got, ref64))[:4]:
            torch.testing.assert_close(k, r.float(), atol=2e-5, rtol=1e-4, msg=name)
        again = _run_fused(kernels.fused_linear_logprobs, h.clone(), w.clone(), b, y, torch.float32)
        assert all(torch.equal(a, c) for a, c in zip(got, again))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("budget_cols", [0, 5, 333, 1000])
@pytest.mark.parametrize("tile", [None, "4096"])
def test_fused_kept_logits_give_the_same_gradients(kernels, reference, monkeypatch, budget_cols, tile):
    """Logits kept from forward (none, part of a tile, several tiles, all of V) replace backward's
    recompute without changing any result; a second backward over the same graph (retain_graph)
    gives the same gradients, so the kept logits are not modified in place."""
    N, H, V = 33, 24, 1000
    monkeypatch.setenv("ALIGNKIT_FUSED_CACHE_BYTES", str(budget_cols * N * 4))
    if tile:
        monkeypatch.setenv("ALIGNKIT_TILE_BYTES", tile)
    h, w, b, y = _fused_inputs(N, H, V, torch.float32, "cpu", bias=True, seed=5)
    assert kernels.fused_cache_cols(h.float().requires_grad_(), w.float()) == budget_cols
    assert kernels.fused_cache_cols(h.float(), w.float()) == 0  # no gradient wanted: nothing kept
    got = _run_fused(kernels.fused_linear_logprobs, h, w, b, y, torch.float32, temperature=0.7)
    ref64 = _run_fused(reference.fused_linear_logprobs, h, w, b, y, torch.float64, temperature=0.7)
    for name, k, r in zip(("logp", "entropy", "grad_hidden", "grad_weight", "grad_bias"), got, ref64):
        torch.testing.assert_close(k, r.float(), atol=2e-5, rtol=1e-4, msg=name)
    hh, ww = h.float().requires_grad_(), w.float().requires_grad_()
    out = kernels.fused_linear_logprobs(hh, ww, y, bias=b.float()).sum()
    first = torch.autograd.grad(out, (hh, ww), retain_graph=True)
    second = torch.autograd.grad(out, (hh, ww))
    assert all(torch.equal(a, c) for a, c in zip(first, second))
    # only the entropy differentiated (no gradient flows into logp)
    hk = h.detach().float().requires_grad_()
    kernels.fused_linear_logprobs(hk, w.float(), y, return_entropy=True)[1].sum().backward()
    hr = h.detach().clone().requires_grad_()
    reference.fused_linear_logprobs(hr, w, y, return_entropy=True)[1].sum().backward()
    torch.testing.assert_close(hk.grad, hr.grad.float(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cache_cols", [0, 1500])
def test_fused_partial_last_tile(kernels, reference, monkeypatch, cache_cols):
    """The last vocabulary tile (452 of 1024 columns) is a strided view of the tile buffer: the
    forward GEMM, lse_tile, grad_tile and both backward GEMMs read and write it through its row
    stride, with and without kept logits (which live in their own contiguous blocks)."""
    N, H, V = 40, 24, 2500
    h, w, b, y = _fused_inputs(N, H, V, torch.float32, "cpu", bias=True, seed=7)
    nv = int((y != -100).sum())
    monkeypatch.setenv("ALIGNKIT_TILE_BYTES", str(nv * 1024 * 4))  # tv = 1024: tiles 1024, 1024, 452
    monkeypatch.setenv("ALIGNKIT_FUSED_CACHE_BYTES", str(cache_cols * N * 4))
    got = _run_fused(kernels.fused_linear_logprobs, h, w, b, y, torch.float32, temperature=0.8)
    ref64 = _run_fused(reference.fused_linear_logprobs, h, w, b, y, torch.float64, temperature=0.8)
    for name, k, r in zip(("logp", "entropy", "grad_hidden", "grad_weight", "grad_bias"), got, ref64):
        torch.testing.assert_close(k, r.float(), atol=2e-5, rtol=1e-4, msg=name)


def test_fused_backward_reads_the_kept_logits_only(kernels, monkeypatch):
    """Backward leaves the forward's kept logits as they were, and gives the gradients of a backward
    that recomputes every tile (a cache of no columns)."""
    N, H, V, cols = 64, 24, 3000, 2500
    h, w, b, y = _fused_inputs(N, H, V, torch.float32, "cpu", bias=True, seed=9)
    h, w, b = h.float(), w.float(), b.float()
    nv = int((y != -100).sum())
    monkeypatch.setenv("ALIGNKIT_TILE_BYTES", str(nv * 1024 * 4))  # tv = 1024: 3 kept tiles
    _, lse, ent, cache = torch.ops.alignkit.fused_linear_logprobs_fwd(h, w, b, y, -100, 1.0, True, cols)
    g, ge = torch.linspace(-1, 1, N), torch.linspace(1, 2, N)

    def bwd(c):
        return torch.ops.alignkit.fused_linear_logprobs_bwd(g, ge, h, w, b, y, lse, ent, c, -100, 1.0,
                                                            True, True, True)

    kept = cache.clone()
    assert (kept == 0).float().mean() < 0.5  # logits, bar the rows of ignored labels
    from_cache = bwd(cache)
    assert torch.equal(cache, kept)
    recomputed = bwd(cache[:, :0].contiguous())
    for a, c in zip(from_cache, recomputed):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)


def test_fused_matches_logprobs_batched_shape(kernels):
    h, w, _, _ = _fused_inputs(12, 16, 100, torch.float32, "cpu", bias=False)
    h = h.float().view(3, 4, 16)
    w = w.float()
    y = torch.randint(0, 100, (3, 4))
    got = kernels.fused_linear_logprobs(h, w, y)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, kernels.logprobs(h @ w.T, y), atol=1e-5, rtol=1e-5)


def test_fused_gradcheck(kernels, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_TILE_BYTES", "1024")  # several vocabulary tiles
    h, w, b, y = _fused_inputs(3, 4, 70, torch.float64, "cpu")
    args = [t.requires_grad_() for t in (h, w, b)]

    def f(h, w, b):
        return kernels.fused_linear_logprobs(h, w, y, bias=b, return_entropy=True, temperature=1.3)

    assert torch.autograd.gradcheck(f, args, fast_mode=True)


def test_fused_all_ignored(kernels):
    h = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(9, 4, requires_grad=True)
    logp = kernels.fused_linear_logprobs(h, w, torch.full((3,), -100))
    assert torch.equal(logp, torch.zeros(3))
    logp.sum().backward()
    assert torch.equal(h.grad, torch.zeros_like(h)) and torch.equal(w.grad, torch.zeros_like(w))


def test_fused_validation(kernels):
    h, w, y = torch.randn(3, 4), torch.randn(9, 4), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match="weight.*H = 4"):
        kernels.fused_linear_logprobs(h, torch.randn(9, 5), y)
    with pytest.raises(RuntimeError, match="bias.*shape"):
        kernels.fused_linear_logprobs(h, w, y, bias=torch.randn(8))
    with pytest.raises(RuntimeError, match="weight.*dtype"):
        kernels.fused_linear_logprobs(h, w.double(), y)
    with pytest.raises(RuntimeError, match=r"labels.*\[0, 9\)"):
        kernels.fused_linear_logprobs(h, w, torch.tensor([0, 9, 1]))
    with pytest.raises(ValueError, match="labels.*shape"):
        kernels.fused_linear_logprobs(h, w, torch.tensor([0, 1]))


def test_fused_opcheck_and_compile(kernels, reference):
    h, w, b, y = _fused_inputs(6, 8, 40, torch.float32, "cpu")
    h, w, b = (t.float().requires_grad_() for t in (h, w, b))
    for cache_cols in (0, 17):
        torch.library.opcheck(torch.ops.alignkit.fused_linear_logprobs_fwd,
                              (h, w, b, y, -100, 1.0, True, cache_cols))
        _, lse, ent, cache = torch.ops.alignkit.fused_linear_logprobs_fwd(h.detach(), w.detach(), b.detach(), y,
                                                                         -100, 1.0, True, cache_cols)
        assert cache.shape == (6, cache_cols)
        torch.library.opcheck(torch.ops.alignkit.fused_linear_logprobs_bwd,
                              (torch.randn(6), torch.randn(6), h.detach(), w.detach(), b.detach(), y, lse, ent,
                               cache, -100, 1.0, True, True, True))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(h, w, b):
        return kernels.fused_linear_logprobs(h, w, y, bias=b).sum()

    f(h, w, b).backward()
    grads = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    reference.fused_linear_logprobs(h, w, y, bias=b).sum().backward()
    for g, t in zip(grads, (h, w, b)):
        torch.testing.assert_close(g, t.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_large_vocab(kernels, reference, dtype):
    h, w, b, y = _fused_inputs(64, 64, 49152, dtype, "cpu", bias=False)
    got = _run_fused(kernels.fused_linear_logprobs, h, w, b, y, dtype)
    ref = _run_fused(reference.fused_linear_logprobs, h, w, b, y, dtype)
    ref64 = _run_fused(reference.fused_linear_logprobs, h, w, b, y, torch.float64)
    for k, r, r64 in list(zip(got, ref, ref64))[:4]:
        if dtype in HALF:
            assert_close(k, r, dtype, r64)
        else:
            torch.testing.assert_close(k, r.to(k.dtype), atol=1e-4, rtol=1e-4)
