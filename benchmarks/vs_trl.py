"""alignkit against TRL, end to end, on the same work: DPO (``DPOTrainer``) and reward-model training
(``RewardTrainer``).

    python benchmarks/vs_trl.py [--task dpo|rm|both] [--model smollm2-135m] [--pairs 2] [--max-length 256]
                                [--max-prompt-length 128] [--steps 8] [--rounds 2] [--json PATH] [--markdown PATH]

Both sides train the same model (built by ``alignkit.models.build_model``, so the reward head starts
from the same seeded weights) on the same token ids in the same order: the pairs alignkit's trainer
reads (bundled HH-RLHF sample, the model's chat template, ``data.max_length`` / ``max_prompt_length``)
in the order of its first epoch; TRL gets those ids as an already-tokenised dataset, read in order
(``SequentialSampler``). Same batch, β, learning rate (constant schedule), AdamW (fused, TRL's
default), gradient clipping at 1.0, no weight decay, seed, steps. The loss of every step is compared
(step 1 must agree to 1e-4).

Variants, each run in a fresh process, alternated round by round so that machine load hits all alike:

* DPO: alignkit (live reference), alignkit ``trainer.precompute_reference=true``, TRL (live reference),
  TRL ``precompute_ref_log_probs=True``. The reference log-probs are computed before step 1 on both
  precomputing sides and are not in the step times.
* RM: alignkit ``algo=rm``, TRL ``RewardTrainer``.
* ``-lowmem``: alignkit with ``trainer.malloc_mmap_threshold=131072`` (an alignkit option, no TRL counterpart):
  freed tensors of 128 KiB or more go back to the operating system at once instead of staying resident as
  heap holes.
* ``-ckpt``: with gradient checkpointing on both sides (alignkit ``model.gradient_checkpointing=true``, TRL
  ``gradient_checkpointing=True``). Every variant trains in fp32: TRL 1.16's configs default to bf16 autocast
  and gradient checkpointing, so ``bf16`` and ``gradient_checkpointing`` are passed to TRL explicitly.

Reported per variant: median seconds per optimiser step (steps 2..N: step 1 warms up), the process's
peak resident memory (``VmHWM``: model loading, data, reference, training), and the losses. TRL is an
optional dependency: ``pip install trl``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "dpo": ["alignkit", "alignkit-precomputed", "alignkit-precomputed-lowmem", "alignkit-precomputed-ckpt", "trl",
            "trl-precomputed", "trl-precomputed-ckpt"],
    "rm": ["alignkit", "alignkit-lowmem", "alignkit-ckpt", "trl", "trl-ckpt"],
}
#: ``-lowmem``: alignkit with trainer.malloc_mmap_threshold at this many bytes (glibc's initial value: freed
#: tensors of 128 KiB or more leave the process at once; less resident memory, some page-fault time)
LOWMEM_THRESHOLD = 128 << 10
#: the pairs of the peer each alignkit variant is measured against
PEERS = {("dpo", "alignkit"): "trl", ("dpo", "alignkit-precomputed"): "trl-precomputed",
         ("dpo", "alignkit-precomputed-lowmem"): "trl-precomputed",
         ("dpo", "alignkit-precomputed-ckpt"): "trl-precomputed-ckpt", ("rm", "alignkit"): "trl",
         ("rm", "alignkit-lowmem"): "trl", ("rm", "alignkit-ckpt"): "trl-ckpt"}


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _overrides(args, task: str) -> list[str]:
    return [f"algo={task}", f"model={args.model}", f"data.max_length={args.max_length}",
            f"data.max_prompt_length={args.max_prompt_length}", "data.sources.0.eval_size=2",
            f"data.sources.0.max_examples={args.steps * args.pairs + 2}",  # one epoch is exactly the steps
            f"trainer.batch_size={args.pairs}", f"trainer.max_steps={args.steps}", f"trainer.lr={args.lr}",
            "trainer.lr_scheduler=constant", "trainer.warmup_steps=0", "trainer.weight_decay=0.0",
            "trainer.max_grad_norm=1.0", f"trainer.seed={args.seed}", "trainer.eval_steps=0",
            "trainer.eval_at_start=false", "trainer.max_eval_examples=2", "trainer.progress=false", "logger=none"] + (
        [f"algo.beta={args.beta}"] if task == "dpo" else ["algo.use_margin=false"])


def _train_pairs(cfg, args):
    """The token ids of the pairs alignkit's trainer reads in its first ``steps`` batches, in order:
    ``[{"prompt": [...], "chosen": [...], "rejected": [...]}]`` (responses without the prompt)."""
    from alignkit.data.cache import tokenize_cached
    from alignkit.data.load import load_data
    from alignkit.models import build_tokenizer
    from alignkit.registry import registry_for
    from alignkit.trainer.state import BatchStream

    registry = registry_for()
    formats = {name: spec for name, (spec, _) in registry.data_formats.items()}
    tokenizer = build_tokenizer(cfg.model)
    feats, _ = tokenize_cached(load_data(cfg.data, formats, "preference").train, "preference", tokenizer, cfg.data)
    order = BatchStream(feats, args.pairs, lambda x: x, cfg.trainer.seed)._order[: args.steps * args.pairs]
    pairs = []
    for i in order:
        f = feats[i]
        p = next(j for j, v in enumerate(f["chosen_labels"]) if v != -100)
        pairs.append({"prompt": f["chosen_input_ids"][:p], "chosen": f["chosen_input_ids"][p:],
                      "rejected": f["rejected_input_ids"][p:]})
    return tokenizer, pairs


# -- one variant, in its own process ------------------------------------------------------------
def run_alignkit(args, task: str, variant: str) -> dict:
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    over = _overrides(args, task) + (["trainer.precompute_reference=true"] if "precomputed" in variant else []) + (
        ["model.gradient_checkpointing=true"] if variant.endswith("-ckpt") else []) + (
        [f"trainer.malloc_mmap_threshold={LOWMEM_THRESHOLD}"] if variant.endswith("-lowmem") else [])
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        result = train(compose_config(over + [f"trainer.run_dir={tmp}/run"]),
                       step_callback=lambda step: stamps.append(time.perf_counter()))
    losses = [v for _, v in sorted(result.history["train/loss"])]
    first = {k[len("train/"):]: v[0][1] for k, v in result.history.items() if k.startswith("train/") and v}
    return {"losses": losses, "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])], "step1": first}


def run_trl(args, task: str, variant: str) -> dict:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback, set_seed

    from alignkit.config.compose import compose_config
    from alignkit.models import build_model

    # the plain transformers model: alignkit's model.lean_activations is alignkit's, not TRL's
    cfg = compose_config(_overrides(args, task) + ["model.lean_activations=false"])
    tokenizer, pairs = _train_pairs(cfg, args)
    set_seed(args.seed)
    model = build_model(cfg.model, kind="causal_lm" if task == "dpo" else "reward", tokenizer=tokenizer)
    stamps, losses, logs1 = [], [], {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                if not logs1:
                    logs1.update({k: float(v) for k, v in logs.items() if isinstance(v, (int, float))})

    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.pairs, max_steps=args.steps,
                  learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                  max_grad_norm=1.0, seed=args.seed, logging_steps=1, save_strategy="no", report_to="none",
                  use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, max_length=args.max_length,
                  # TRL's configs default to bf16 autocast and gradient checkpointing; alignkit's run fp32 without
                  # checkpointing unless told: both are set explicitly here, the same on both sides
                  bf16=False, gradient_checkpointing=variant.endswith("-ckpt"))
    if task == "dpo":
        from trl import DPOConfig, DPOTrainer

        class InOrder(DPOTrainer):
            def _prepare_dataset(self, dataset, *a, **k):  # the benchmark hands over alignkit's token ids
                return dataset

            def _get_train_sampler(self, *a, **k):
                return SequentialSampler(self.train_dataset)

        data = Dataset.from_list([{"prompt_ids": p["prompt"], "chosen_ids": p["chosen"], "rejected_ids": p["rejected"]}
                                  for p in pairs])
        precompute = "precomputed" in variant
        ref = None if precompute else copy.deepcopy(model).eval()  # what alignkit's live reference is
        conf = DPOConfig(beta=args.beta, precompute_ref_log_probs=precompute, loss_type=["sigmoid"], **common)
        trainer = InOrder(model=model, ref_model=ref, args=conf, train_dataset=data, processing_class=tokenizer,
                          callbacks=[Clock()])
    else:
        from trl import RewardConfig, RewardTrainer

        class InOrder(RewardTrainer):
            def _get_train_sampler(self, *a, **k):
                return SequentialSampler(self.train_dataset)

        # TRL reads the reward at the last token that is not padding; with pad == EOS that would skip the
        # EOS alignkit reads at, so padding gets its own id here (<|endoftext|>, absent from the data)
        tok = type(tokenizer).from_pretrained(tokenizer.name_or_path) if tokenizer.name_or_path else tokenizer
        if tok.pad_token_id == tok.eos_token_id:
            tok.pad_token = tok.convert_ids_to_tokens(0)
            model.config.pad_token_id = tok.pad_token_id
        data = Dataset.from_list([{"chosen_ids": p["prompt"] + p["chosen"], "rejected_ids": p["prompt"] + p["rejected"]}
                                  for p in pairs])
        conf = RewardConfig(center_rewards_coefficient=None, **common)
        trainer = InOrder(model=model, args=conf, train_dataset=data, processing_class=tok, callbacks=[Clock()])
    torch.manual_seed(args.seed)
    trainer.train()
    return {"losses": losses, "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])], "step1": logs1}


def child(args) -> None:
    task, variant = args.child.split(":")
    fn = run_trl if variant.startswith("trl") else run_alignkit
    out = fn(args, task, variant)
    out["peak_rss"] = _peak_rss()
    print("RESULT " + json.dumps(out))


# -- the driver --------------------------------------------------------------------------------
def _spawn(args, task: str, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{task}:{variant}"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k in ("model", "pairs", "max_length", "max_prompt_length", "steps", "lr", "beta", "seed")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{task}:{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def _machine() -> str:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    isa = "AVX-512" if "avx512f" in open("/proc/cpuinfo").read() else "AVX2"
    return f"{cpu} ({isa}), {os.cpu_count()} cores, torch {torch.__version__}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def summarise(task: str, runs: dict[str, list[dict]]) -> dict:
    out = {}
    for variant, rs in runs.items():
        seconds = [s for r in rs for s in r["step_seconds"]]
        out[variant] = {"median_step_s": statistics.median(seconds), "min_step_s": min(seconds),
                        "max_step_s": max(seconds), "peak_rss_gb": max(r["peak_rss"] for r in rs) / 2**30,
                        "losses": rs[0]["losses"]}
    for (t, mine), peer in PEERS.items():
        if t != task or mine not in out or peer not in out:
            continue
        a, b = out[mine], out[peer]
        diffs = [abs(x - y) for x, y in zip(a["losses"], b["losses"])]
        s1a, s1b = runs[mine][0]["step1"], runs[peer][0]["step1"]
        a["vs"] = {"peer": peer, "time_ratio": a["median_step_s"] / b["median_step_s"],
                   "memory_ratio": a["peak_rss_gb"] / b["peak_rss_gb"], "step1_loss_diff": diffs[0],
                   "later_steps_max_loss_diff": max(diffs[1:], default=0.0)}
        if "logps/chosen" in s1a and "logps/chosen" in s1b:  # DPO's step-1 loss is log 2 on both sides by construction
            a["vs"]["step1_logps_chosen_rel_diff"] = abs(s1a["logps/chosen"] - s1b["logps/chosen"]) / abs(s1b["logps/chosen"])
    return out


def markdown(results: dict, meta: dict) -> str:
    lines = [f"Commit {meta['commit']}, {meta['date']}, {meta['machine']}; {meta['settings']}.", "",
             "| task | variant | s/step (median, min–max) | peak RSS (GB) | step-1 loss | vs | time | memory "
             "| step-1 loss diff | step-1 chosen log-prob rel. diff |", "|---|---|---|---|---|---|---|---|---|---|"]
    for task, rows in results.items():
        for variant, r in rows.items():
            vs = r.get("vs")
            lp = vs.get("step1_logps_chosen_rel_diff") if vs else None
            cmp = (f"{vs['peer']} | {vs['time_ratio']:.2f}× | {vs['memory_ratio']:.2f}× | "
                   f"{vs['step1_loss_diff']:.1e} | {'—' if lp is None else f'{lp:.1e}'}") if vs else " | | | | "
            lines.append(f"| {task} | {variant} | {r['median_step_s']:.2f} ({r['min_step_s']:.2f}–{r['max_step_s']:.2f}) "
                         f"| {r['peak_rss_gb']:.2f} | {r['losses'][0]:.6f} | {cmp} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="both", choices=["dpo", "rm", "both"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=2, help="pairs per optimiser step")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-prompt-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="times each variant runs (alternated)")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--verbose", action="store_true", help="print each variant's step-1 metrics")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    try:
        import trl
    except ImportError:
        raise SystemExit("alignkit: TRL is not installed; pip install trl (benchmarks/vs_trl.py compares against it)")
    tasks = ["dpo", "rm"] if args.task == "both" else [args.task]
    results = {}
    for task in tasks:
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS[task]}
        for rnd in range(args.rounds):
            for variant in VARIANTS[task]:
                r = _spawn(args, task, variant)
                runs[variant].append(r)
                if args.verbose:
                    print(json.dumps(r["step1"]), flush=True)
                print(f"round {rnd + 1} {task}:{variant}: median {statistics.median(r['step_seconds']):.2f} s/step, "
                      f"peak {r['peak_rss'] / 2**30:.2f} GB, losses {[round(x, 6) for x in r['losses'][:3]]}...",
                      flush=True)
        results[task] = summarise(task, runs)
    meta = {"commit": _commit(), "date": time.strftime("%Y-%m-%d"), "machine": _machine(), "trl": trl.__version__,
            "settings": (f"model={args.model}, {args.pairs} pairs/step, max_length {args.max_length}, max prompt "
                         f"{args.max_prompt_length}, {args.steps} steps × {args.rounds} rounds, lr {args.lr}, "
                         f"β {args.beta}, TRL {trl.__version__}")}
    table = markdown(results, meta)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
