"""Rollout throughput: alignkit's ``hf`` engine (Hugging Face ``generate``, one padded batch) against
the ``vllm`` engine, same model, prompts, sampling and lengths, each in its own process.

    python benchmarks/rollout_throughput.py                      # both engines, SmolLM2-135M-Instruct
    python benchmarks/rollout_throughput.py --engines hf,vllm,vllm:bfloat16    # engine[:engine dtype]

Defaults: 64 prompts of the bundled arithmetic task x 4 samples x <= 64 new tokens, temperature 1.
Reports generated tokens per second (stop tokens included), the engine's start time, and the
share of this CPU's measured fp32 matmul peak the engine reaches (2 x parameters FLOPs per
generated token, attention ignored). Writes ``--out`` (JSON) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def matmul_gflops(seconds: float = 3.0, n: int = 1024) -> float:
    """Measured fp32 GEMM throughput of this process's torch threads (the CPU's practical bound)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9


def measure(args: argparse.Namespace) -> dict:
    """One engine in this process: start it, warm it up, time ``--rounds`` rollouts."""
    import torch

    from alignkit.config.compose import compose_config
    from alignkit.rollout.engine import make_engine
    from alignkit.rollout.generation import row_seeds, tokenize_prompts
    from alignkit.testing import make_run

    overrides = [f"model={args.model}", "data=arithmetic", "algo.reward.function=numeric_match",
                 f"algo.generation.max_new_tokens={args.max_new_tokens}", f"rollout.engine={args.engine}",
                 f"rollout.dtype={args.dtype}", f"rollout.enforce_eager={str(not args.compile).lower()}"]
    run = make_run(overrides, algo="grpo", model=args.model, reference=False)
    prompts = [json.loads(line)["prompt"] for line in open(_asset("train.jsonl"))][:args.prompts]
    prompts = [[{"role": "user", "content": p}] for p in prompts]
    batch = tokenize_prompts(prompts, run.tokenizer, run.cfg.data)
    batch["prompts"] = prompts
    batch["index"] = torch.arange(len(prompts))
    g = run.cfg.algo.generation
    t0 = time.perf_counter()
    engine = make_engine(run.cfg.rollout, run)
    start_s = time.perf_counter() - t0
    gen_kw = dict(num_samples=args.samples, sampling=g)

    def rollout(r: int, b: dict = batch):
        seeds = row_seeds(0, "bench", r, index=b["index"].tolist(), num_samples=args.samples)
        if not engine.keyed_sampling:
            engine.reseed(r)
        return engine.generate(b, seeds=seeds, **gen_kw)

    warm = {k: v[:4] for k, v in batch.items()}
    rollout(-1, warm)  # warm-up on 4 prompts (first-call allocations, kernel selection)
    times, tokens = [], []
    for r in range(args.rounds):
        t = time.perf_counter()
        ro = rollout(r)
        times.append(time.perf_counter() - t)
        tokens.append(int(ro.response_lengths.sum()))
    n_params = sum(p.numel() for p in run.policy.parameters())
    tps = sum(tokens) / sum(times)
    engine.close()
    return {"engine": args.engine, "dtype": args.dtype, "compiled": args.compile, "start_s": round(start_s, 1),
            "seconds": [round(t, 2) for t in times], "tokens": tokens, "tokens_per_s": round(tps, 1),
            "gflop_per_token": round(2 * n_params / 1e9, 3), "achieved_gflops": round(tps * 2 * n_params / 1e9, 1),
            "torch_threads": torch.get_num_threads()}


def _asset(name: str) -> str:
    import alignkit

    return os.path.join(os.path.dirname(alignkit.__file__), "assets", "arithmetic", name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default="hf,vllm,vllm:bfloat16")
    p.add_argument("--engine", help=argparse.SUPPRESS)  # one engine, in this process (used by the driver)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--compile", action="store_true", help="vLLM graph compilation (enforce_eager=false)")
    p.add_argument("--out", default="benchmarks/rollout_throughput.json")
    args = p.parse_args()
    if args.engine:
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return
    rows = []
    for spec in args.engines.split(","):  # engine or engine:dtype
        engine, _, dtype = spec.partition(":")
        cmd = [sys.executable, __file__, "--engine", engine, "--model", args.model, "--prompts", str(args.prompts),
               "--samples", str(args.samples), "--max-new-tokens", str(args.max_new_tokens), "--rounds",
               str(args.rounds), "--dtype", dtype or args.dtype, *(["--compile"] if args.compile else [])]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
            raise SystemExit(f"{engine}: no result")
        rows.append(json.loads(line[7:]))
    peak = matmul_gflops()
    for r in rows:
        r["share_of_matmul_peak"] = round(r["achieved_gflops"] / peak, 3)
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores", "torch": torch.__version__, "matmul_peak_gflops": round(peak, 1),
            "settings": {k: getattr(args, k) for k in ("model", "prompts", "samples", "max_new_tokens", "rounds",
                                                        "dtype", "compile")}}
    try:
        import vllm

        meta["vllm"] = vllm.__version__
    except Exception:  # noqa: BLE001
        pass
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    base = next((r["tokens_per_s"] for r in rows if r["engine"] == "hf"), None)
    print(f"| engine | start s | tokens/s | vs hf | GFLOP/s | share of matmul peak ({peak:.0f} GFLOP/s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        vs = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"| {r['engine']} ({r['dtype']}) | {r['start_s']} | {r['tokens_per_s']} | {vs} | {r['achieved_gflops']} | "
              f"{r['share_of_matmul_peak']:.2f} |")


if __name__ == "__main__":
    main()
