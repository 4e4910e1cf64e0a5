"""The Markdown results page of benchmarks/smollm2_data/ from the files run.sh copies there: each data step's
provenance record (command, counts, seconds) and the SFT run's metrics.jsonl.

    python benchmarks/smollm2_data/summarise.py > benchmarks/smollm2_data/README.md
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
STEPS = ["chats", "sdf_best", "seeds_de"]


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def main() -> None:
    print("# Alignment data on SmolLM2-135M-Instruct (CPU)\n")
    print("Made by `run.sh` (the commands below are each step's own record): Baize self-chat from the 16 bundled seed "
          "tasks, self-distillation with feedback (4 replies per assistant turn, SmolLM2 itself as the judge), SFT on "
          "the best replies, and post-answering of the 16 seed tasks into German (py3langid checks every translation "
          "and answer).\n")
    finished = json.loads((HERE / "sdf_best.provenance.json").read_text())["finished"][:10]
    print(f"Measured on {finished} on the 2-core development machine while other jobs kept it loaded (load average "
          "about 6; `translate` ran beside `sdf`): the times are several times a quiet machine's.\n")
    print("| step | rows out | seconds | counts |")
    print("|---|---|---|---|")
    for name in STEPS:
        rec = json.loads((HERE / f"{name}.provenance.json").read_text())
        print(f"| `{rec['step']}` | {rec['outputs']['output']['rows']} | {rec['seconds']:.0f} | {_counts(rec['counts'])} |")
    rows = [json.loads(line) for line in (HERE / "sft_metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [(r["step"], r["eval/loss"]) for r in rows if "eval/loss" in r]
    if evals:
        print(f"\nSFT on the best replies ({evals[-1][0]} steps x 4): held-out loss {evals[0][1]:.3f} at step "
              f"{evals[0][0]} -> {evals[-1][1]:.3f} at step {evals[-1][0]}.")
    print("\nCommands:\n")
    for name in STEPS:
        rec = json.loads((HERE / f"{name}.provenance.json").read_text())
        print(f"    {rec['command']}")


if __name__ == "__main__":
    main()
