"""``alignkit bench``: time and peak memory of alignkit's ops next to eager PyTorch and peers.

Usage: ``alignkit bench [op ...] [--device cpu|cuda] [--json PATH] [--plot PATH] [--quick]
[--shapes targets|sweep|all]`` (also ``python -m alignkit.bench``). Ops: logprobs, fused_linear_logprobs,
gae, dpo_loss, ppo_loss, value_loss, masked_whiten (default: all). Shapes: kernels.md's target shapes by
default; ``sweep`` runs the log-prob ops over the other vocabularies (32000, 49152, 128256) and heads
(H up to 4096) instead, ``all`` both.

Every case runs each implementation side by side in the same process, interleaved round by round so
background load hits them alike; the table shows the median and the p20/p80 of the per-call times and
the speed-up of the median over the eager baseline. Peers (TRL's ``selective_log_softmax`` and
``ChunkedLogProbFunction``, Liger) are included when importable and skipped otherwise.

Peak memory is measured honestly, per implementation: on CPU in a fresh subprocess that builds the
inputs, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the case once and
reports ``VmHWM - VmRSS before`` (every byte the call touched: outputs, saved tensors, gradients,
workspaces); on CUDA in process, from the caching allocator's peak counter around one more call.
With ``--device cuda`` the logprobs and fused cases use a Llama-3 vocabulary (V = 128256) in bf16.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

OPS = ("logprobs", "fused_linear_logprobs", "gae", "dpo_loss", "ppo_loss", "value_loss", "masked_whiten")
SHAPES = ("targets", "sweep", "all")

# Shapes of the log-prob ops, per device: kernels.md's targets, and with ``--shapes sweep`` the other
# vocabularies models use (Llama-2/Mistral 32000, SmolLM2 49152, Llama-3 128256) and heads up to
# H = 4096. On the CPU the sweep's fused cases stay at about 1-1.6 TFLOP per call (N shrinks as H
# grows), so that one with its eager and TRL peers takes minutes, not hours.
_F32, _BF16 = torch.float32, torch.bfloat16
LOGPROBS_SHAPES = {  # (N, V, dtype)
    "targets": {"cpu": [(4096, 49152, _F32), (4096, 49152, _BF16)],
                "cuda": [(8192, 128256, _F32), (8192, 128256, _BF16)]},
    "sweep": {"cpu": [(8192, 32000, _F32), (8192, 32000, _BF16), (4096, 128256, _F32), (4096, 128256, _BF16)],
              "cuda": [(8192, 32000, _F32), (8192, 32000, _BF16), (8192, 49152, _F32), (8192, 49152, _BF16)]},
    "quick": [(512, 8192, _F32)],
}
FUSED_SHAPES = {  # (N, H, V, dtype)
    "targets": {"cpu": [(4096, 576, 49152, _F32)],
                "cuda": [(4096, 4096, 128256, _BF16), (8192, 4096, 128256, _BF16)]},
    # a Llama-2/Mistral-size vocabulary, SmolLM2-1.7B's head, Llama-3-8B's head
    "sweep": {"cpu": [(8192, 576, 32000, _F32), (2048, 2048, 49152, _F32), (512, 4096, 128256, _F32)],
              "cuda": [(8192, 4096, 32000, _BF16), (8192, 2048, 49152, _BF16)]},
    "quick": [(512, 128, 8192, _F32)],
}


def _shapes_of(table: dict, device: str, quick: bool, shapes: str) -> list[tuple]:
    """The rows of LOGPROBS_SHAPES or FUSED_SHAPES that ``--shapes`` (targets, sweep, all) selects."""
    if quick:
        return table["quick"]
    groups = ("targets", "sweep") if shapes == "all" else (shapes,)
    return [s for g in groups for s in table[g][device]]


@dataclass
class Case:
    """One benchmark case: inputs builder and the implementations to compare (name → make(inputs) → run)."""
    op: str
    shape: str
    dtype: str
    mode: str  # "fwd" or "fwd+bwd"
    build: Callable[[str], dict]
    impls: dict[str, Callable[[dict], Callable[[], None]]]
    baseline: str  # the implementation speed-ups are measured against
    #: useful work of one call, for the rate column: {"bytes": minimum bytes moved} or {"flop": flops}
    work: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Inputs (built in place so that peak-RSS measurements have no transient from input creation)
# ------------------------------------------------------------------------------------------------
def _randn(shape, device, dtype=torch.float32, scale=1.0, shift=0.0, grad=False):
    t = torch.empty(shape, device=device, dtype=dtype).normal_(shift, scale)
    return t.requires_grad_(grad)


def _labels(n, V, device):
    return torch.empty(n, dtype=torch.long, device=device).random_(0, V)


def _peers():
    peers = {}
    try:
        from trl.trainer.utils import selective_log_softmax
        peers["trl_selective"] = selective_log_softmax
    except Exception:  # noqa: BLE001 - any import failure means "not installed"
        pass
    try:
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer import utils as trl_utils
        peers["trl_chunked"] = (ChunkedLogProbFunction, getattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", 4096))
    except Exception:  # noqa: BLE001
        pass
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        peers["liger_flce"] = liger_fused_linear_cross_entropy
    except Exception:  # noqa: BLE001
        pass
    return peers


def _backward(*tensors):
    for t in tensors:
        t.grad = None
    return tensors


def _fused_case(N, H, V, dtype, device, peers) -> Case:
    from alignkit.ops import _kernels as K

    def fused_inputs(dev):
        return {"h": _randn((N, H), dev, dtype, grad=True), "w": _randn((V, H), dev, dtype, scale=H ** -0.5, grad=True),
                "y": _labels(N, V, dev)}

    def fl_kernel(d):
        def run():
            K.fused_linear_logprobs(*_backward(d["h"], d["w"]), d["y"]).sum().backward()
        return run

    def fl_eager(d):
        def run():
            h, w = _backward(d["h"], d["w"])
            torch.log_softmax(h @ w.T, -1).gather(-1, d["y"].unsqueeze(-1)).sum().backward()
        return run

    impls = {"alignkit kernel": fl_kernel, "eager linear+log_softmax+gather": fl_eager}
    if "trl_chunked" in peers:
        fn, chunk = peers["trl_chunked"]

        def fl_trl(d):
            def run():
                h, w = _backward(d["h"], d["w"])
                fn.apply(h, w, None, d["y"], 1.0, chunk, None, 1.0, ())[0].sum().backward()
            return run
        impls["TRL ChunkedLogProbFunction"] = fl_trl
    if "liger_flce" in peers and device == "cuda":
        f = peers["liger_flce"]

        def fl_liger(d):
            def run():
                h, w = _backward(d["h"], d["w"])
                f(h, w, d["y"], reduction="sum").backward()  # cross-entropy = -Σ logp
            return run
        impls["Liger fused_linear_cross_entropy"] = fl_liger
    # useful flops: forward h·Wᵀ, backward G·W and Gᵀ·h (recomputing the logits is overhead)
    return Case("fused_linear_logprobs", f"N={N} H={H} V={V}", str(dtype).replace("torch.", ""), "fwd+bwd",
                fused_inputs, impls, "eager linear+log_softmax+gather", work={"flop": 6 * N * H * V})


def cases(device: str, quick: bool, shapes: str = "targets") -> list[Case]:
    """The benchmark cases. ``shapes``: ``targets`` (kernels.md's target shapes), ``sweep`` (the other
    vocabularies and heads of LOGPROBS_SHAPES / FUSED_SHAPES; logprobs and fused_linear_logprobs only)
    or ``all``; ``quick`` replaces them with small ones (a smoke test)."""
    from alignkit.ops import _kernels as K
    from alignkit.ops import reference as R

    peers = _peers()
    out: list[Case] = []

    # logprobs forward: N tokens over a V vocabulary (on a GPU: a Llama-3-size vocabulary, HBM-bound)
    lp_impls = {
        "alignkit kernel": lambda d: lambda: K.logprobs(d["x"], d["y"]),
        "alignkit reference": lambda d: lambda: R.logprobs(d["x"], d["y"]),
        "eager log_softmax+gather": lambda d: lambda: torch.log_softmax(d["x"].float(), -1).gather(
            -1, d["y"].unsqueeze(-1)).squeeze(-1),
    }
    if "trl_selective" in peers:
        f = peers["trl_selective"]
        lp_impls["TRL selective_log_softmax"] = lambda d: lambda: f(d["x"], d["y"])
    for N, V, dtype in _shapes_of(LOGPROBS_SHAPES, device, quick, shapes):
        out.append(Case("logprobs", f"N={N} V={V}", str(dtype).replace("torch.", ""), "fwd",
                        lambda dev, dtype=dtype, N=N, V=V: {"x": _randn((N, V), dev, dtype, scale=2.0),
                                                             "y": _labels(N, V, dev)},
                        lp_impls, "eager log_softmax+gather",
                        work={"bytes": N * V * dtype.itemsize + N * (8 + 4)}))

    # fused_linear_logprobs forward + backward (on a GPU: bf16 with a Llama-3-8B head, kernels.md's target)
    for N, H, V, dtype in _shapes_of(FUSED_SHAPES, device, quick, shapes):
        out.append(_fused_case(N, H, V, dtype, device, peers))

    if shapes == "sweep":  # the other ops have their target shapes only
        return out

    # gae
    B, T = (16, 256) if quick else (64, 1024)

    def gae_inputs(dev, B=B, T=T):  # shapes bound now: B and T are reused below
        return {"r": _randn((B, T), dev), "v": _randn((B, T), dev),
                "m": torch.ones(B, T, dtype=torch.bool, device=dev).tril_(T // 2)}

    out.append(Case("gae", f"B={B} T={T}", "float32", "fwd", gae_inputs, {
        "alignkit kernel": lambda d: lambda: K.gae(d["r"], d["v"], d["m"], gamma=1.0, lam=0.95),
        "python reverse loop": lambda d: lambda: R.gae(d["r"], d["v"], d["m"], gamma=1.0, lam=0.95),
    }, "python reverse loop"))

    # dpo_loss forward + backward on B pairs
    B = 8192 if quick else 65536

    def dpo_inputs(dev, B=B):
        d = {k: _randn((B,), dev, scale=5.0, shift=-50.0, grad=k.startswith("p")) for k in ("pc", "pr", "rc", "rr")}
        d["dy"] = torch.full((B,), 1.0 / B, device=dev)  # the upstream gradient of the per-pair losses
        return d

    # fwd+bwd of the op itself: the per-pair losses get a given upstream gradient (``backward(dy)``, as
    # Triton's and Liger's benchmarks do); a ``.mean()`` in between would add the same ~0.1-0.2 ms of
    # reduction and broadcast to both paths here, none of it dpo_loss's work
    def dpo_impl(mod):
        def make(d):
            def run():
                pc, pr = _backward(d["pc"], d["pr"])
                mod.dpo_loss(pc, pr, d["rc"], d["rr"], beta=0.1)[0].backward(d["dy"])
            return run
        return make

    out.append(Case("dpo_loss", f"B={B}", "float32", "fwd+bwd", dpo_inputs,
                    {"alignkit kernel": dpo_impl(K), "eager composition": dpo_impl(R)}, "eager composition"))

    # ppo_loss / value_loss forward + backward on [B, T]
    B, T = (16, 512) if quick else (64, 1024)

    def ppo_inputs(dev, B=B, T=T):
        d = {"lp": _randn((B, T), dev, scale=0.5, shift=-2.0, grad=True),
             "old": _randn((B, T), dev, scale=0.5, shift=-2.0),
             "ref": _randn((B, T), dev, scale=0.5, shift=-2.0), "adv": _randn((B, T), dev),
             "m": torch.ones(B, T, dtype=torch.bool, device=dev).tril_(T // 2)}
        return d

    def ppo_impl(mod):
        def make(d):
            def run():
                (lp,) = _backward(d["lp"])
                loss, _ = mod.ppo_loss(lp, d["old"], d["adv"], d["m"], ref_logprobs=d["ref"], kl_coef=0.05,
                                       kl_estimator="k3")
                loss.backward()
            return run
        return make

    def value_impl(mod):
        def make(d):
            def run():
                (v,) = _backward(d["lp"])
                mod.value_loss(v, d["old"], d["adv"], d["m"], clip_eps=0.2)[0].backward()
            return run
        return make

    out.append(Case("ppo_loss", f"B={B} T={T} (k3 KL)", "float32", "fwd+bwd", ppo_inputs,
                    {"alignkit kernel": ppo_impl(K), "eager composition": ppo_impl(R)}, "eager composition"))
    out.append(Case("value_loss", f"B={B} T={T}", "float32", "fwd+bwd", ppo_inputs,
                    {"alignkit kernel": value_impl(K), "eager composition": value_impl(R)}, "eager composition"))

    # masked_whiten forward + backward on the PPO shapes (advantages are whitened every PPO step)
    def whiten_impl(mod):
        def make(d):
            def run():
                (x,) = _backward(d["lp"])
                mod.masked_whiten(x, d["m"]).backward(d["adv"])
            return run
        return make

    out.append(Case("masked_whiten", f"B={B} T={T}", "float32", "fwd+bwd", ppo_inputs,
                    {"alignkit kernel": whiten_impl(K), "eager composition": whiten_impl(R)}, "eager composition"))
    return out


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------
def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_case(case: Case, device: str, quick: bool):
    """Per-call wall times (s) of every implementation, interleaved round by round, and the runs."""
    inputs = case.build(device)
    runs = {name: make(inputs) for name, make in case.impls.items()}
    # warm-up (first-call allocations, thread pools, caches): one round, more while under 0.5 s
    start = time.perf_counter()
    for warm in range(10):
        for run in runs.values():
            run()
        _sync(device)
        if time.perf_counter() - start > 0.5:
            break
    # fast cases get up to 200 rounds within the budget, so their medians are stable to a few percent;
    # slow ones (seconds per call) at least 5, as single calls here vary by ±10% with the neighbours' load
    budget, min_rounds, max_rounds = (0.3, 2, 20) if quick else (2.0, 5, 200)
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    while True:
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
        rounds = len(next(iter(times.values())))
        if rounds >= max_rounds or (rounds >= min_rounds and time.perf_counter() - start > budget):
            return times, runs


def _status_bytes(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def measure_memory_here(op: str, impl: str, device: str, quick: bool) -> int:
    """Peak extra bytes of one call of ``impl`` on ``op``'s case (run in a fresh process)."""
    case = next(c for c in cases(device, quick, "all") if _case_id(c) == op)
    inputs = case.build(device)
    run = case.impls[impl](inputs)
    if device == "cuda":
        return cuda_memory(run)
    gc.collect()
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so the peak
    # read afterwards belongs to this call alone (imports and input creation are excluded).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_bytes("VmRSS")
    run()
    return max(_status_bytes("VmHWM") - base, 0)


def _case_id(case: Case) -> str:
    return f"{case.op}|{case.shape}|{case.dtype}"


def cuda_memory(run: Callable[[], None]) -> int:
    """Peak extra bytes of one call, from the caching allocator's own counters (in process: they count
    this process's allocations only; workspaces cuBLAS keeps from the warm-up are not counted)."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def memory_case(case: Case, impl: str, device: str, quick: bool) -> int | None:
    cmd = [sys.executable, "-m", "alignkit.bench", "--_memory", _case_id(case), impl,
           "--device", device] + (["--quick"] if quick else [])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        return int(res.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001 - report as unknown rather than fail the whole benchmark
        return None


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_benchmarks(ops_: list[str], device: str, quick: bool, memory: bool = True,
                   shapes: str = "targets") -> list[dict]:
    rows = []
    for case in cases(device, quick, shapes):
        if case.op not in ops_:
            continue
        times, runs = time_case(case, device, quick)
        base = statistics.median(times[case.baseline])
        for impl, ts in times.items():
            med = statistics.median(ts)
            mem = None
            if memory:
                mem = cuda_memory(runs[impl]) if device == "cuda" else memory_case(case, impl, device, quick)
            row = {"op": case.op, "shape": case.shape, "dtype": case.dtype, "mode": case.mode,
                   "impl": impl, "median_s": med, "p20_s": _pct(ts, 0.2), "p80_s": _pct(ts, 0.8),
                   "n": len(ts), "peak_extra_mb": None if mem is None else mem / 2 ** 20,
                   "speedup_vs_baseline": base / med, "baseline": case.baseline}
            if "bytes" in case.work:
                row["gb_per_s"] = case.work["bytes"] / med / 1e9
            if "flop" in case.work:
                row["tflop_per_s"] = case.work["flop"] / med / 1e12
            rows.append(row)
            print(_format_row(row), flush=True)
        del runs
    return rows


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------
_HEADER = (f"{'op':<22} {'shape':<22} {'dtype':<9} {'mode':<8} {'implementation':<33} "
           f"{'median':>10} {'p20-p80':>19} {'peak extra':>11} {'vs eager':>9} {'rate':>13}")


def _ms(s):
    return f"{s * 1e3:.2f} ms" if s < 10 else f"{s:.2f} s"


def _format_row(r):
    mem = "?" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.1f} MB"
    band = f"{_ms(r['p20_s'])}-{_ms(r['p80_s'])}"
    return (f"{r['op']:<22} {r['shape']:<22} {r['dtype']:<9} {r['mode']:<8} {r['impl']:<33} "
            f"{_ms(r['median_s']):>10} {band:>19} {mem:>11} {r['speedup_vs_baseline']:>8.2f}x {_rate(r):>13}")


def _rate(r):
    if "tflop_per_s" in r:
        return f"{r['tflop_per_s']:.3g} TFLOP/s"
    if "gb_per_s" in r:
        return f"{r['gb_per_s']:.3g} GB/s"
    return ""


def machine_info(device: str) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": device, "loadavg_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    try:  # the build of alignkit's CPU kernels this process runs (DEFAULT, AVX2 or AVX512)
        from alignkit import _C
        info["alignkit_cpu_isa"] = _C.cpu_isa()
    except (ImportError, AttributeError):
        pass
    try:
        import trl
        info["trl"] = trl.__version__
    except ImportError:
        pass
    from alignkit.environment import package_versions

    info["packages"] = package_versions()
    return info


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases_ = list(dict.fromkeys((r["op"], r["shape"], r["dtype"]) for r in rows))
    fig, axes = plt.subplots(len(cases_), 2, figsize=(13, 1.6 + 1.3 * len(rows) / max(len(cases_), 1) * len(cases_) / 2.2),
                             squeeze=False)
    for i, key in enumerate(cases_):
        rs = [r for r in rows if (r["op"], r["shape"], r["dtype"]) == key]
        names = [r["impl"] for r in rs]
        colors = ["tab:green" if n.startswith("alignkit kernel") else "tab:gray" for n in names]
        # time on a linear axis from 0 (bar lengths compare honestly), each bar labelled with its median
        # and speed-up, so bars too short to see (gae's kernel) still read
        ax = axes[i][0]
        ax.barh(names, [r["median_s"] * 1e3 for r in rs], color=colors,
                xerr=[[max(r["median_s"] - r["p20_s"], 0) * 1e3 for r in rs],
                      [max(r["p80_s"] - r["median_s"], 0) * 1e3 for r in rs]])
        for y, r in enumerate(rs):
            ax.text(max(r["p80_s"], r["median_s"]) * 1e3, y,
                    f"  {_ms(r['median_s'])}, {r['speedup_vs_baseline']:.2f}x", va="center", fontsize=8)
        ax.set_xlim(0, max(max(r["p80_s"], r["median_s"]) for r in rs) * 1e3 * 1.45)
        ax.set_title(f"{key[0]} {key[1]} {key[2]} — time (ms, lower is better)", fontsize=9)
        ax.invert_yaxis()
        # memory spans 1 MB to GBs within a case: a symlog axis, each bar labelled
        ax = axes[i][1]
        mems = [r["peak_extra_mb"] for r in rs]
        ax.barh(names, [m or 0 for m in mems], color=colors)
        for y, m in enumerate(mems):
            ax.text(max(m or 0, 0.01), y, "  ?" if m is None else f"  {m:,.1f} MB", va="center", fontsize=8)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, max(m or 1 for m in mems) * 20)
        ax.set_title("peak extra memory (MB, lower is better)", fontsize=9)
        ax.invert_yaxis()
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignkit bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("ops", nargs="*", help=f"ops to run (default: all of {', '.join(OPS)})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--plot", help="write a PNG plot here")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repetitions (smoke test)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case memory subprocesses")
    parser.add_argument("--shapes", default="targets", choices=SHAPES,
                        help="targets: kernels.md's target shapes (default); sweep: the other vocabularies "
                             "(32000, 49152, 128256) and heads (H up to 4096) for logprobs and "
                             "fused_linear_logprobs; all: both")
    parser.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("alignkit bench: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args._memory:
        print(measure_memory_here(args._memory[0], args._memory[1], args.device, args.quick))
        return 0
    unknown = [o for o in args.ops if o not in OPS]
    if unknown:
        print(f"alignkit bench: unknown op(s) {unknown}; choose from {', '.join(OPS)}", file=sys.stderr)
        return 2
    import alignkit.ops as ops
    if not ops.kernels_available():
        print("alignkit bench: alignkit._C is not built; run `pip install --no-build-isolation -e .`",
              file=sys.stderr)
        return 1
    info = machine_info(args.device)
    print(f"# alignkit bench on {info.get('cpu', '?')} ({info['threads']} threads, {info['cpu_capability']}; "
          f"alignkit CPU kernels: {info.get('alignkit_cpu_isa', '?')}), "
          f"torch {info['torch']}, device {args.device}, load {info['loadavg_start'][0]:.2f}")
    print(_HEADER)
    rows = run_benchmarks(list(args.ops) or list(OPS), args.device, args.quick, memory=not args.no_memory,
                          shapes=args.shapes)
    info["loadavg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
