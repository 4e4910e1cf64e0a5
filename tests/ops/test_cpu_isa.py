"""Every build of the CPU kernels compiled in (DEFAULT, AVX2, AVX512: see alignkit/ops.h) that this
CPU can run gives the reference's results. The other tests run the build this process picked (the
best one); here each other build runs in a subprocess with ATEN_CPU_CAPABILITY lowered to it."""
import os
import subprocess
import sys

import pytest
import torch

# Parity of every op with the reference, at sizes that leave partial vector steps at every width
# (7, 37, 769 columns; 1000 and 1027 elements); prints the kernel build that ran.
PARITY = r"""
import torch, alignkit._C as C
from alignkit.ops import _kernels as K, reference as R
g = torch.Generator().manual_seed(0)
def rnd(*s, dtype=torch.float32):
    return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
def grads(fn, *xs, **kw):
    xs = [x.detach().requires_grad_() for x in xs]
    out = fn(*xs, **kw)
    loss = out if torch.is_tensor(out) and out.dim() == 0 else None
    if loss is None:
        first = out[0] if isinstance(out, tuple) else out
        loss = (first * torch.linspace(-1, 1, first.numel()).view_as(first).to(first.dtype)).sum()
    loss.backward()
    return [out[0] if isinstance(out, tuple) else out] + [x.grad for x in xs]
def check(name, a, b, tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.float(), y.float(), atol=tol, rtol=tol, msg=name)
for V in (7, 37, 769):
    for dtype, tol in ((torch.float32, 2e-5), (torch.bfloat16, 2e-2)):
        x, y = rnd(5, V, dtype=dtype) * 3, torch.randint(0, V, (5,), generator=g)
        y[1] = -100
        for ent in (False, True):
            f = lambda m: lambda x: m.logprobs(x, y, temperature=0.7, return_entropy=ent)
            check(f"logprobs V={V} {dtype} entropy={ent}", grads(f(K), x), grads(f(R), x), tol)
h, w, y = rnd(9, 24), rnd(37, 24) * 0.3, torch.randint(0, 37, (9,), generator=g)
check("fused_linear_logprobs", grads(lambda h, w: K.fused_linear_logprobs(h, w, y), h, w),
      grads(lambda h, w: R.fused_linear_logprobs(h, w, y), h, w), 2e-5)
for B in (1000, 1027):
    pc, pr, rc, rr = (rnd(B) * 5 - 50 for _ in range(4))
    for lt in ("sigmoid", "hinge", "ipo", "robust"):
        f = lambda m: lambda a, b: m.dpo_loss(a, b, rc, rr, loss_type=lt, label_smoothing=0.1)[0]
        check(f"dpo {lt} B={B}", grads(f(K), pc, pr), grads(f(R), pc, pr), 1e-5)
T = 1027 // 13 + 1
lp, old, ref, adv, ent = (rnd(13, T) * 0.5 - 2 for _ in range(5))
m = torch.rand(13, T, generator=g) > 0.3
for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
    f = lambda mod: lambda a, e: mod.ppo_loss(a, old, adv, m, ref_logprobs=ref, kl_coef=0.05, kl_estimator="k3",
                                              entropy=e, entropy_coef=0.01, dual_clip=3.0, agg=agg)[0]
    check(f"ppo {agg}", grads(f(K), lp, ent), grads(f(R), lp, ent), 1e-5)
    f = lambda mod: lambda v: mod.value_loss(v, old, adv, m, clip_eps=0.2, agg=agg)[0]
    check(f"value {agg}", grads(f(K), lp), grads(f(R), lp), 1e-5)
check("gae", K.gae(lp, old, m, gamma=0.99, lam=0.95), R.gae(lp, old, m, gamma=0.99, lam=0.95), 1e-5)
check("masked_whiten", grads(lambda x: K.masked_whiten(x, m), adv), grads(lambda x: R.masked_whiten(x, m), adv), 1e-5)
print(C.cpu_isa())
"""


def _builds():
    from alignkit import _C
    return _C.cpu_isas_built().split()


def _runnable(isa: str) -> bool:
    """Whether this CPU runs `isa` (ATen lowers ATEN_CPU_CAPABILITY to what the CPU has, never raises it)."""
    order = ["DEFAULT", "AVX2", "AVX512"]
    here = torch.backends.cpu.get_cpu_capability()
    return here in order and order.index(isa) <= order.index(here)


def test_the_best_build_runs(kernels):
    from alignkit import _C
    builds = _builds()
    assert builds[0] == "DEFAULT"
    here = torch.backends.cpu.get_cpu_capability()
    expected = here if here in builds else ("AVX2" if here == "AVX512" and "AVX2" in builds else "DEFAULT")
    assert _C.cpu_isa() == expected


@pytest.mark.parametrize("isa", ["DEFAULT", "AVX2", "AVX512"])
def test_every_build_matches_the_reference(kernels, isa):
    from alignkit import _C
    if isa not in _builds():
        pytest.skip(f"the {isa} build is not compiled in (ALIGNKIT_CPU_ISAS)")
    if not _runnable(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    if isa == _C.cpu_isa():
        pytest.skip(f"{isa} is this process's build: every other kernel test runs it")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=isa.lower(), OMP_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", PARITY], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[-1] == isa
