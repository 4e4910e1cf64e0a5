"""Peak memory and time of one DPO training step, fused vs unfused log-probs.

    python benchmarks/dpo_step_memory.py [--model smollm2-135m] [--batch 4] [--seq 512] [--device cpu|cuda]
                                         [--json PATH]

Each variant runs in a fresh subprocess: build the model (``alignkit.models.build_model``), make a
batch of B chosen + B rejected sequences of length T (first half prompt, masked with -100), then
reset the peak-RSS counter (/proc/self/clear_refs) and run one step: reference log-probs under
no_grad, policy log-probs, ``alignkit.ops.dpo_loss``, backward. ``fused`` computes log-probs with
``fused_linear_logprobs`` on the final hidden states and the lm_head weight (no [2B, T, V] tensor);
``unfused`` materialises the logits and uses ``logprobs``. Reported: peak extra memory over the step
(CPU: RSS; CUDA: the caching allocator's peak above what was allocated before the step) and its time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _status_bytes(name):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name + ":"))


class _Peak:
    """Peak extra memory of what runs between start() and stop(), in bytes."""

    def __init__(self, device: str):
        self.device, self.base = device, 0

    def start(self):
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status_bytes("VmRSS")

    def stop(self) -> int:
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return _status_bytes("VmHWM") - self.base


def run_variant(model_name: str, fused: bool, B: int, T: int, device: str = "cpu") -> dict:
    import torch

    import alignkit.ops as ops
    from alignkit import cli, modeling, models

    cfg = cli.compose_config(["algo=dpo", f"model={model_name}"])
    model = models.build_model(cfg.model, kind="causal_lm").to(device)
    model.train()
    V = modeling.lm_head(model).weight.shape[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (2 * B, T), generator=g).to(device)
    attn = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : T // 2] = -100
    # warm-up step on a short batch (first-call allocations, thread pools)
    modeling.sequence_logprobs(model, ids[:, :16], attn[:, :16], labels[:, :16], fused=fused)["sum"].sum().backward()
    model.zero_grad(set_to_none=False)
    peak = _Peak(device)
    peak.start()
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = modeling.sequence_logprobs(model, ids, attn, labels, fused=fused)["sum"]
    pol = modeling.sequence_logprobs(model, ids, attn, labels, fused=fused)["sum"]
    losses, _, _ = ops.dpo_loss(pol[:B], pol[B:], ref[:B], ref[B:], beta=0.1)
    losses.mean().backward()
    extra = peak.stop()  # synchronises on CUDA
    step_s = time.perf_counter() - t0
    return {"model": model_name, "fused": fused, "B_pairs": B, "T": T, "V": V, "device": device,
            "peak_extra_mb": extra / 2 ** 20, "step_s": step_s,
            "logits_tensor_mb": 2 * B * T * V * 4 / 2 ** 20, "ops_backend": ops.get_backend()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=4, help="preference pairs per step")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json")
    p.add_argument("--_variant", choices=["fused", "unfused"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._variant:
        print(json.dumps(run_variant(a.model, a._variant == "fused", a.batch, a.seq, a.device)))
        return 0
    rows = []
    for variant in ("fused", "unfused"):
        cmd = [sys.executable, __file__, "--_variant", variant, "--model", a.model, "--batch", str(a.batch),
               "--seq", str(a.seq), "--device", a.device]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return res.returncode
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['model']} DPO step on {r['device']}, {r['B_pairs']} pairs x T={r['T']} (V={r['V']}), {variant:>7}: "
              f"peak extra {r['peak_extra_mb']:.0f} MB, {r['step_s']:.2f} s "
              f"(one [2B, T, V] fp32 logits tensor = {r['logits_tensor_mb']:.0f} MB)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
