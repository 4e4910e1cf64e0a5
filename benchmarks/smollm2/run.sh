#!/bin/bash
# SmolLM2-135M-Instruct on the bundled HH-RLHF pairs: DPO, a reward model, PRO, RRHF and CoH, each for 100 steps
# x 4 pairs (400 training pairs); the same 200 held-out pairs for all. `alignkit eval` scores the DPO run against the untouched model (its
# reference; the same model and held-out pairs give the "before" of every row) with the reward model; PRO, RRHF
# and CoH report their held-out mean log-prob accuracy in their own end-of-training evaluation.
# Writes the run folders under runs/ and copies what benchmarks/smollm2/ keeps; summarise.py makes the table.
set -euo pipefail
export HF_HUB_OFFLINE=1
COMMON=(model=smollm2-135m data.max_length=192 data.max_prompt_length=96 data.sources.0.max_examples=600
        data.sources.0.eval_size=200 trainer.batch_size=4 trainer.max_steps=100 trainer.lr=2e-5 trainer.warmup_steps=10
        trainer.eval_at_start=false trainer.eval_steps=0)
alignkit train algo=dpo "${COMMON[@]}" trainer.run_dir=runs/smollm2-dpo
alignkit train algo=rm "${COMMON[@]}" trainer.run_dir=runs/smollm2-rm
alignkit eval runs/smollm2-dpo eval.reward_model=runs/smollm2-rm/final eval.generation.num_prompts=48 \
  eval.generation.max_new_tokens=64
for a in pro rrhf coh; do
  alignkit train algo=$a "${COMMON[@]}" trainer.run_dir=runs/smollm2-$a
done
here=$(dirname "$0")
for a in dpo rm pro rrhf coh; do
  mkdir -p "$here/$a"
  cp runs/smollm2-$a/config.yaml runs/smollm2-$a/metrics.jsonl "$here/$a/"
  if [ -d runs/smollm2-$a/eval ]; then cp runs/smollm2-$a/eval/eval.json runs/smollm2-$a/eval/eval.md "$here/$a/"; fi
done
python "$here/summarise.py" > "$here/README.md"
