"""Greedy exact-match accuracy on the bundled held-out arithmetic problems (300, never trained on).

    python benchmarks/grpo_arithmetic/evaluate.py --model smollm2-135m           # the model preset
    python benchmarks/grpo_arithmetic/evaluate.py --path runs/grpo/final         # a run's final model

Each problem is rendered with the model's chat template as training renders it, answered greedily
(<= 48 new tokens) by the ``vllm`` rollout engine and scored with the ``numeric_match`` reward
(the answer extracted from the response, compared as a number). Prints accuracy with its 95%
Wilson interval and writes every response to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--path", default=None, help="a Hugging Face folder (a run's final/) instead of the preset")
    p.add_argument("--engine", default="vllm")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from alignkit.plugins.rewards.verifiable import numeric_match
    from alignkit.rollout.config import SamplingConfig
    from alignkit.rollout.engine import make_engine
    from alignkit.rollout.generation import tokenize_prompts
    from alignkit.testing import make_run

    overrides = ["data=arithmetic", "algo.reward.function=numeric_match", f"rollout.engine={args.engine}",
                 f"algo.generation.max_new_tokens={args.max_new_tokens}"]
    if args.path:
        overrides += [f"model.path={args.path}"]
        run = make_run(overrides, algo="grpo", model="hf", reference=False)
    else:
        run = make_run(overrides, algo="grpo", model=args.model, reference=False)
    import alignkit

    test = [json.loads(line) for line in open(os.path.join(os.path.dirname(alignkit.__file__), "assets",
                                                            "arithmetic", "test.jsonl"))]
    prompts = [t["prompt"] for t in test]
    refs = [t["reference"] for t in test]
    batch = tokenize_prompts(prompts, run.tokenizer, run.cfg.data)
    batch["prompts"], batch["references"] = prompts, refs
    engine = make_engine(run.cfg.rollout, run)
    greedy = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    with torch.no_grad():
        ro = engine.generate(batch, num_samples=1, sampling=greedy)
    scores = numeric_match(prompts, ro.completions, references=refs)
    k, n = int(sum(scores)), len(scores)
    lo, hi = wilson(k, n)
    result = {"model": args.path or args.model, "correct": k, "n": n, "accuracy": k / n, "wilson95": [lo, hi],
              "eos_fraction": float(ro.has_eos.float().mean()),
              "mean_response_tokens": float(ro.response_lengths.float().mean())}
    print("RESULT " + json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**result, "responses": [{"prompt": q, "reference": r, "response": c, "correct": bool(s)}
                                               for q, r, c, s in zip(prompts, refs, ro.completions, scores)]},
                      f, indent=1)
    engine.close()


if __name__ == "__main__":
    main()
