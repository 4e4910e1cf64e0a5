"""``alignkit profile <train overrides>``: a few training steps under ``torch.profiler``.

Composes the training config from the overrides (exactly as ``alignkit train`` does), runs
``--steps`` optimizer steps (the first one is a warm-up and is not recorded), writes a Chrome trace
(open it in chrome://tracing or https://ui.perfetto.dev) and prints the top ops, plus the share of
the recorded time spent in alignkit's kernels (``alignkit::*`` ops) so their weight in a step is visible.

``--compare`` shows what the kernels save end to end: the same steps run twice, each in a fresh
process, once as configured and once with ``ops.backend=reference model.fused_logprobs=false`` (the
pure-PyTorch ops and full ``[B, T, V]`` logits), and the step time, peak memory and share of time in
alignkit's ops of both are printed side by side and plotted (``--plot``, default
``<run dir>/profile_compare.png``).

Example: ``alignkit profile algo=dpo model=tiny --steps 4 --trace dpo_trace.json``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

#: what ``--compare`` sets for its run without the kernels
WITHOUT_KERNELS = ("ops.backend=reference", "model.fused_logprobs=false")


def kernel_share(events) -> tuple[float, float]:
    """(CPU time inside alignkit::* ops, children such as their tile GEMMs included; total self CPU
    time of all ops) in microseconds. alignkit ops never nest in each other, so nothing counts twice."""
    ours = sum(e.cpu_time_total for e in events if e.key.startswith("alignkit::"))
    total = sum(e.self_cpu_time_total for e in events)
    return ours, total


class _PeakMemory:
    """Peak memory of the recorded steps: on CUDA the caching allocator's peak; on CPU the process's
    peak RSS (Linux: VmHWM, reset when the recording starts through /proc/self/clear_refs)."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        self.base = 0

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = self._status("VmRSS")
        except OSError:
            self.base = 0

    def stop(self) -> tuple[float, float]:
        """(peak, peak above the memory in use when recording started), in MB."""
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            try:
                peak = self._status("VmHWM")
            except OSError:
                import resource
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak / 2 ** 20, max(peak - self.base, 0) / 2 ** 20


def profile_steps(overrides: list[str], steps: int, trace: str | None, top: int, sort: str) -> dict:
    """Runs ``steps`` training steps (the first a warm-up) under the profiler; prints the top ops and
    returns the summary: step time (median of the recorded steps), peak memory, alignkit ops' share."""
    from alignkit import trainer  # imported late: the trainer pulls in transformers
    from alignkit.config import compose

    overrides = list(overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "trainer.max_steps" for o in overrides):
        overrides.append(f"trainer.max_steps={steps}")
    cfg = compose.compose_config(overrides)

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    result = {}
    memory = _PeakMemory()
    stamps: list[float] = []  # end of each step

    def on_ready(prof):
        result["events"] = prof.key_averages()
        result["prof"] = prof

    def on_step(step, prof):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) == 1:
            memory.start()  # the warm-up step is done: what follows is recorded
        prof.step()

    schedule = torch.profiler.schedule(wait=0, warmup=1, active=steps - 1, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=on_ready,
                                record_shapes=True, profile_memory=True) as prof:
        run = trainer.train(cfg, step_callback=lambda step: on_step(step, prof))
    peak_mb, step_extra_mb = memory.stop()
    if "events" not in result:  # fewer steps ran than scheduled: flush what was recorded
        on_ready(prof)
    run_dir = Path(getattr(run, "output_dir", None) or ".")
    trace_path = Path(trace) if trace else run_dir / "profile_trace.json"
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    result["prof"].export_chrome_trace(str(trace_path))

    events = result["events"]
    print(events.table(sort_by=sort, row_limit=top))
    ours, total = kernel_share(events)
    share = 100.0 * ours / total if total else 0.0
    print(f"alignkit kernels (alignkit::*, incl. their GEMMs): {ours / 1e3:.1f} ms of {total / 1e3:.1f} ms "
          f"CPU time recorded ({share:.1f}%) over {steps - 1} step(s)")
    print(f"Chrome trace: {trace_path}")
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"overrides": overrides, "recorded_steps": len(durations),
            "step_s": statistics.median(durations) if durations else None,
            "peak_mb": peak_mb, "step_extra_mb": step_extra_mb, "alignkit_ms": ours / 1e3,
            "total_ms": total / 1e3, "alignkit_share": share, "trace": str(trace_path), "run_dir": str(run_dir),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _without_kernels(overrides: list[str]) -> list[str]:
    """The overrides with ops.backend and model.fused_logprobs replaced by WITHOUT_KERNELS."""
    keys = {o.split("=", 1)[0] for o in WITHOUT_KERNELS}
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in keys] + list(WITHOUT_KERNELS)


def compare(overrides: list[str], steps: int, top: int, sort: str, plot_path: str | None) -> list[dict]:
    """Profiles the steps with the kernels and without them, each in a fresh process (so neither run
    inherits the other's memory), then prints the two side by side and plots them."""
    runs = []
    for label, ovr in (("kernels", list(overrides)), ("reference", _without_kernels(overrides))):
        print(f"== {label}: alignkit profile {' '.join(ovr)}", flush=True)
        summary = Path(os.environ.get("TMPDIR", "/tmp")) / f"alignkit_profile_{os.getpid()}_{label}.json"
        cmd = [sys.executable, "-m", "alignkit.profile", *ovr, "--steps", str(steps), "--top", str(top),
               "--sort", sort, "--_summary", str(summary)]
        res = subprocess.run(cmd)
        if res.returncode != 0 or not summary.exists():
            print(f"alignkit profile: the {label} run failed (exit {res.returncode}); its output is above",
                  file=sys.stderr)
            return []
        runs.append({"label": label, **json.loads(summary.read_text())})
        summary.unlink()
    print(format_comparison(runs))
    png = Path(plot_path) if plot_path else Path(runs[0]["run_dir"]) / "profile_compare.png"
    plot_comparison(runs, png)
    print(f"plot: {png}")
    return runs


def format_comparison(runs: list[dict]) -> str:
    """The side-by-side table of ``compare``'s runs (the first is the baseline of the ratios)."""
    k = runs[0]
    mem = "GPU memory allocated" if k["device"] == "cuda" else "RSS"
    rows = [("step time (median of recorded steps)", "step_s", lambda v: f"{v * 1e3:.1f} ms"),
            (f"peak {mem}", "peak_mb", lambda v: f"{v:.0f} MB"),
            (f"peak {mem} above the start of the recorded steps", "step_extra_mb", lambda v: f"{v:.0f} MB"),
            ("time in alignkit ops (share of op CPU time)", "alignkit_share", lambda v: f"{v:.1f}%")]
    head = f"{'':<52}" + "".join(f"{r['label']:>16}" for r in runs) + f"{'ratio':>10}"
    lines = [head]
    for name, key, fmt in rows:
        vals = [r[key] for r in runs]
        ratio = "" if key == "alignkit_share" or not vals[0] else f"{vals[1] / vals[0]:.2f}x"
        lines.append(f"{name:<52}" + "".join(f"{fmt(v) if v is not None else '?':>16}" for v in vals) + f"{ratio:>10}")
    lines.append(f"(ratio: {runs[1]['label']} / {runs[0]['label']}; {runs[0]['recorded_steps']} recorded step(s) "
                 f"each; the {runs[1]['label']} run used {' '.join(WITHOUT_KERNELS)})")
    return "\n".join(lines)


def plot_comparison(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in runs]
    colors = ["tab:green", "tab:gray"]
    panels = [("step time (ms)", [r["step_s"] * 1e3 for r in runs]),
              ("peak memory (MB)", [r["peak_mb"] for r in runs]),
              ("memory above the start of the steps (MB)", [r["step_extra_mb"] for r in runs]),
              ("time in alignkit ops (%)", [r["alignkit_share"] for r in runs])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 2.6))
    for ax, (title, vals) in zip(axes, panels):
        ax.bar(labels, vals, color=colors[:len(vals)])
        for x, v in enumerate(vals):
            ax.text(x, v, f"{v:,.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(vals + [1e-9]) * 1.25)
        ax.set_title(title, fontsize=9)
    fig.suptitle(" ".join(runs[0]["overrides"]), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignkit profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="training config overrides, e.g. algo=dpo model=tiny")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps to run (first = warm-up)")
    parser.add_argument("--trace", default=None, help="Chrome trace path (default: <run dir>/profile_trace.json)")
    parser.add_argument("--top", type=int, default=25, help="number of ops in the printed table")
    parser.add_argument("--sort", default="self_cpu_time_total",
                        help="column to sort the table by (any torch.profiler key_averages sort key)")
    parser.add_argument("--compare", action="store_true",
                        help="run the steps again with " + " ".join(WITHOUT_KERNELS) + " and compare")
    parser.add_argument("--plot", default=None, help="with --compare: PNG path (default: <run dir>/profile_compare.png)")
    parser.add_argument("--_summary", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (one warm-up step and at least one recorded step)")
    if args.compare:
        if args.trace:
            parser.error("--trace names one file; with --compare each run writes <its run dir>/profile_trace.json")
        return 0 if compare(args.overrides, args.steps, args.top, args.sort, args.plot) else 1
    summary = profile_steps(args.overrides, args.steps, args.trace, args.top, args.sort)
    if args._summary:
        Path(args._summary).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
