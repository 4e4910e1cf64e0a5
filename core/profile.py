"""``alignkit profile <train overrides>``: a few training steps under ``torch.profiler``.

Composes the training config from the overrides (exactly as ``alignkit train`` does), runs
``--steps`` optimizer steps (the first one is a warm-up and is not recorded), writes a Chrome trace
(open it in chrome://tracing or https://ui.perfetto.dev) and prints the top ops, plus the share of
the recorded time spent in alignkit's kernels (``alignkit::*`` ops) so their weight in a step is visible.

Example: ``alignkit profile algo=dpo model=tiny --steps 4 --trace dpo_trace.json``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def kernel_share(events) -> tuple[float, float]:
    """(CPU time inside alignkit::* ops, children such as their tile GEMMs included; total self CPU
    time of all ops) in microseconds. alignkit ops never nest in each other, so nothing counts twice."""
    ours = sum(e.cpu_time_total for e in events if e.key.startswith("alignkit::"))
    total = sum(e.self_cpu_time_total for e in events)
    return ours, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignkit profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="training config overrides, e.g. algo=dpo model=tiny")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps to run (first = warm-up)")
    parser.add_argument("--trace", default=None, help="Chrome trace path (default: <run dir>/profile_trace.json)")
    parser.add_argument("--top", type=int, default=25, help="number of ops in the printed table")
    parser.add_argument("--sort", default="self_cpu_time_total",
                        help="column to sort the table by (any torch.profiler key_averages sort key)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (one warm-up step and at least one recorded step)")

    from alignkit import cli, trainer  # imported late: the trainer pulls in transformers

    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "trainer.max_steps" for o in overrides):
        overrides.append(f"trainer.max_steps={args.steps}")
    cfg = cli.compose_config(overrides)

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    result = {}

    def on_ready(prof):
        result["events"] = prof.key_averages()
        result["prof"] = prof

    schedule = torch.profiler.schedule(wait=0, warmup=1, active=args.steps - 1, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=on_ready,
                                record_shapes=True, profile_memory=True) as prof:
        run = trainer.train(cfg, step_callback=lambda step: prof.step())
    if "events" not in result:  # fewer steps ran than scheduled: flush what was recorded
        on_ready(prof)
    run_dir = getattr(run, "output_dir", None) or Path(".")
    trace = Path(args.trace) if args.trace else Path(run_dir) / "profile_trace.json"
    trace.parent.mkdir(parents=True, exist_ok=True)
    result["prof"].export_chrome_trace(str(trace))

    events = result["events"]
    print(events.table(sort_by=args.sort, row_limit=args.top))
    ours, total = kernel_share(events)
    share = 100.0 * ours / total if total else 0.0
    print(f"alignkit kernels (alignkit::*, incl. their GEMMs): {ours / 1e3:.1f} ms of {total / 1e3:.1f} ms "
          f"CPU time recorded ({share:.1f}%) over {args.steps - 1} step(s)")
    print(f"Chrome trace: {trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
