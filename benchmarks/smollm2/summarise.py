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
    from omegaconf import OmegaConf

    from alignkit.metrics import wilson_interval

    dpo = _eval("dpo")
    acc = dpo["preference"]["accuracies"]
    n = dpo["preference"]["n"]
    print("# SmolLM2-135M-Instruct on the bundled HH-RLHF pairs\n")
    print("Produced by `bash benchmarks/smollm2/run.sh` (commands there; each run's `config.yaml` and `metrics.jsonl` "
          "in its folder, and `eval.json` / `eval.md` of `alignkit eval` on the DPO run). 400 training pairs "
          "(100 steps × 4), the same 200 held-out pairs for every run, sequences ≤ 192 tokens, lr 2e-5 with 10 "
          "warm-up steps and cosine decay, fp32 on the CPU.\n")
    print("Held-out preference accuracy by the model's mean response log-prob (does the model find the chosen "
          "response more likely per token than the rejected one?), with its 95% Wilson interval (ties count 0.5). "
          "*Before* is the untouched model (`reference_mean_logprob` of the DPO evaluation: the same model and pairs "
          "for every row); *after* is `alignkit eval`'s `policy_mean_logprob` for DPO and each run's own "
          "end-of-training evaluation (`eval/preference_accuracy`, the same score) for the others.\n")
    before = acc["reference_mean_logprob"]
    print("| algo | steps × pairs | n | before | after | held-out loss at the end | DPO implicit-reward accuracy |")
    print("|---|---|---|---|---|---|---|")
    for algo in ALGOS:
        if not (HERE / algo / "metrics.jsonl").exists():
            continue
        final = _final(algo)
        if algo == "dpo":
            after = acc["policy_mean_logprob"]
        else:
            v = final["eval/preference_accuracy"]
            after = {"value": v, "ci": wilson_interval(v, n)}
        implicit = _acc(acc["implicit_reward"]) if algo == "dpo" else "—"
        loss = final.get("eval/loss")
        tcfg = OmegaConf.load(HERE / algo / "config.yaml").trainer
        print(f"| {algo} | {tcfg.max_steps} × {tcfg.batch_size} | {n} | {_acc(before)} | {_acc(after)} | {'—' if loss is None else f'{loss:.4f}'} "
              f"| {implicit} |")
    if "reward" in acc:
        print(f"\nReward model (`algo=rm`, same data and settings, `runs/smollm2-rm`): held-out accuracy by its reward "
              f"{_acc(acc['reward'])} on the same {acc['reward']['n']} pairs.")
    gen = dpo.get("generation")
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
                  f"(wins {w['wins']}, ties {w['ties']}, losses {w['losses']}).")
        if "kl" in gen:
            print(f"Sequence KL(DPO ‖ untouched) on the DPO model's samples (k1 estimator): "
                  f"{gen['kl']['value']:.2f} nats.")


if __name__ == "__main__":
    main()
