"""The Markdown results page of benchmarks/smollm2/ from the files run.sh copies there: each run's
config.yaml and metrics.jsonl, and the eval.json of `alignkit eval` on it.

    python benchmarks/smollm2/summarise.py > benchmarks/smollm2/README.md
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
ALGOS = ["dpo", "pro", "rrhf", "coh"]


def _acc(r: dict | None) -> str:
    return "—" if r is None else f"{r['value']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def _final(algo: str) -> dict:
    rows = [json.loads(line) for line in (HERE / algo / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {k: v for row in rows for k, v in row.items()}


def _eval(algo: str) -> dict | None:
    p = HERE / algo / "eval.json"
    return json.loads(p.read_text()) if p.exists() else None


def main() -> None:
    print("# SmolLM2-135M-Instruct on the bundled HH-RLHF pairs\n")
    print("Produced by `bash benchmarks/smollm2/run.sh` (commands there; each run's `config.yaml`, `metrics.jsonl`, "
          "`eval.json` and `eval.md` in its folder). 400 training pairs (100 steps × 4), 200 held-out pairs, "
          "sequences ≤ 192 tokens, lr 2e-5 with 10 warm-up steps and cosine decay, fp32 on the CPU. "
          "Accuracies on the held-out pairs with their 95% Wilson intervals (ties count 0.5); \"before\" is the "
          "untouched model (the run's reference), \"after\" the trained one.\n")
    print("| algo | n | mean log-prob acc. before | mean log-prob acc. after | summed log-prob acc. before "
          "| summed log-prob acc. after | implicit-reward acc. | held-out loss (end) |")
    print("|---|---|---|---|---|---|---|---|")
    for algo in ALGOS:
        ev = _eval(algo)
        if ev is None:
            continue
        acc = ev["preference"]["accuracies"]
        loss = _final(algo).get("eval/loss")
        print(f"| {algo} | {ev['preference']['n']} | {_acc(acc.get('reference_mean_logprob'))} "
              f"| {_acc(acc.get('policy_mean_logprob'))} | {_acc(acc.get('reference_sum_logprob'))} "
              f"| {_acc(acc.get('policy_sum_logprob'))} | {_acc(acc.get('implicit_reward'))} "
              f"| {'—' if loss is None else f'{loss:.4f}'} |")
    rm = _eval("rm") or {}
    rm_final = _final("rm") if (HERE / "rm" / "metrics.jsonl").exists() else {}
    if rm_final:
        print(f"\nReward model (`algo=rm`, same data and settings): held-out accuracy by its reward "
              f"{rm_final.get('eval/preference_accuracy', float('nan')):.3f} on the same 200 pairs.")
    dpo = _eval("dpo")
    gen = dpo and dpo.get("generation")
    if gen:
        s = gen["settings"]
        pol, ref = gen["policy"], gen["reference"]
        w = gen.get("reward_win_rate")
        print(f"\nGenerations of the DPO model and of the untouched model on the first {gen['n']} held-out prompts "
              f"(temperature {s['temperature']}, ≤ {s['max_new_tokens']} new tokens, seed {gen['seed']}), scored by "
              f"that reward model:\n")
        print("| | DPO model | untouched model |\n|---|---|---|")
        if "mean_reward" in pol:
            print(f"| mean reward | {pol['mean_reward']:.3f} | {ref['mean_reward']:.3f} |")
        print(f"| mean length (tokens) | {pol['length_tokens']:.1f} | {ref['length_tokens']:.1f} |")
        print(f"| EOS rate | {pol['eos_rate']:.3f} | {ref['eos_rate']:.3f} |")
        m = gen.get("metrics", {})
        if "distinct/policy_distinct_2" in m:
            print(f"| distinct-2 | {m['distinct/policy_distinct_2']:.3f} | {m['distinct/reference_distinct_2']:.3f} |")
        if w:
            print(f"\nReward win rate of the DPO model against the untouched model: {_acc(w)} over {w['n']} prompts "
                  f"({w['wins']} wins, {w['ties']} ties, {w['losses']} losses).")
        if "kl" in gen:
            print(f"Sequence KL(DPO ‖ untouched) on the DPO model's samples (k1 estimator): "
                  f"{gen['kl']['value']:.2f} nats.")


if __name__ == "__main__":
    main()
