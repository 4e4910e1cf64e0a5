"""GPU companion to `alignkit bench` (benchmarks/gpu/run.sh): the machine's two ceilings, accuracy of the
CUDA ops at the target shapes, and the vocabulary-tile size of fused_linear_logprobs.

Prints one line per measurement and writes them to the JSON path given as the first argument.
"""
import json
import os
import statistics
import sys

import torch

import alignkit.ops as ops
from alignkit.ops import _kernels as K

dev = "cuda"
results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}


def timed(fn, reps=10, warmup=2):
    """Median milliseconds of fn() over reps, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def report(key, value, unit):
    results[key] = value
    print(f"{key:<58} {value:10.3f} {unit}", flush=True)


# --- ceilings: device-to-device copy (bytes read + written) and an 8192³ bf16 matmul on random data
x = torch.randn(2 ** 30, device=dev, dtype=torch.float16)  # 2 GiB
y = torch.empty_like(x)
ms = timed(lambda: y.copy_(x))
report("ceiling copy GB/s (read+write)", 2 * x.numel() * 2 / ms / 1e6, "GB/s")
del x, y
a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
ms = timed(lambda: a @ b)
report("ceiling bf16 matmul 8192^3 TFLOP/s", 2 * 8192 ** 3 / ms / 1e9, "TFLOP/s")
del a, b

# --- logprobs at N=8192, V=128256: accuracy vs float64 and bandwidth (bytes of the logits read once)
N, V = 8192, 128256
y = torch.randint(0, V, (N,), device=dev)
for dtype in (torch.float32, torch.bfloat16):
    z = (torch.randn(N, V, device=dev) * 2).to(dtype)
    ref = torch.log_softmax(z.double(), -1).gather(-1, y[:, None]).squeeze(-1)
    got = K.logprobs(z, y)
    report(f"logprobs {dtype} max abs err vs float64", (got.double() - ref).abs().max().item(), "")
    lp, ent = K.logprobs(z, y, return_entropy=True)
    ref_ent = -(torch.softmax(z.double(), -1) * torch.log_softmax(z.double(), -1)).sum(-1)
    report(f"logprobs {dtype} entropy max abs err vs float64", (ent.double() - ref_ent).abs().max().item(), "")
    del ref, ref_ent
    for entropy in (False, True):
        ms = timed(lambda: K.logprobs(z, y, return_entropy=entropy), reps=20)
        report(f"logprobs {dtype} entropy={entropy} GB/s", z.numel() * z.element_size() / ms / 1e6, "GB/s")
    del z

# --- fused_linear_logprobs, bf16, H=4096, V=128256: accuracy vs fp32 math and the tile-size sweep
H = 4096
for N in (4096, 8192):
    h = (torch.randn(N, H, device=dev) ).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(V, H, device=dev) * H ** -0.5).to(torch.bfloat16).requires_grad_()
    yy = torch.randint(0, V, (N,), device=dev)
    if N == 4096:
        out = K.fused_linear_logprobs(h, w, yy)
        out.sum().backward()
        gh, gw = h.grad.float(), w.grad.float()
        h.grad = w.grad = None
        hf, wf = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
        ref = torch.log_softmax(hf @ wf.T, -1).gather(-1, yy[:, None]).squeeze(-1)
        ref.sum().backward()
        rel = lambda a, b: ((a - b).norm() / b.norm()).item()
        report("fused bf16 N=4096 logp rel err vs fp32 math", rel(out.float(), ref.detach()), "")
        report("fused bf16 N=4096 grad_hidden rel err vs fp32 math", rel(gh, hf.grad), "")
        report("fused bf16 N=4096 grad_weight rel err vs fp32 math", rel(gw, wf.grad), "")
        del hf, wf, ref, gh, gw, out
    flop = 6 * N * H * V

    def step():
        h.grad = w.grad = None
        K.fused_linear_logprobs(h, w, yy).sum().backward()

    for mb in (32, 128, 512):
        os.environ["ALIGNKIT_TILE_BYTES"] = str(mb << 20)
        ms = timed(step)
        report(f"fused bf16 N={N} tile {mb} MB fwd+bwd TFLOP/s (6NHV)", flop / ms / 1e9, "TFLOP/s")
    os.environ.pop("ALIGNKIT_TILE_BYTES")
    # memory for speed: keep logits from forward for backward (fewer recompute GEMMs), from budgets
    # within the 10%-of-eager memory target up to all of them
    for label, budget in (("256 MB", 256 << 20), ("512 MB", 512 << 20), ("all", N * V * 2)):
        os.environ["ALIGNKIT_FUSED_CACHE_BYTES"] = str(budget)
        ms = timed(step)
        report(f"fused bf16 N={N} {label} logits kept fwd+bwd TFLOP/s (6NHV)", flop / ms / 1e9, "TFLOP/s")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        report(f"fused bf16 N={N} {label} logits kept peak extra MB", (torch.cuda.max_memory_allocated() - base) / 2 ** 20, "MB")
    os.environ.pop("ALIGNKIT_FUSED_CACHE_BYTES")
    fwd = timed(lambda: K.fused_linear_logprobs(h.detach(), w.detach(), yy))
    report(f"fused bf16 N={N} fwd only TFLOP/s (2NHV)", 2 * N * H * V / fwd / 1e9, "TFLOP/s")
    del h, w

if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=1)
