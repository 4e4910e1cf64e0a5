#!/bin/bash
# Alignment data on SmolLM2-135M-Instruct (CPU): Baize self-chat from the 16 bundled seed tasks -> self-distillation
# with feedback (4 replies per turn, the model as judge) -> SFT on the best replies; and post-answering of the same
# 16 seed tasks into German, language-checked with py3langid. Runs under runs/data-smollm2/; copies the provenance
# records (command, config, counts, seconds) here; summarise.py prints the table of benchmarks/smollm2_data/README.md.
set -euo pipefail
export HF_HUB_OFFLINE=1
out=runs/data-smollm2
here=$(dirname "$0")
seeds=pkg://alignkit/assets/seed_tasks/seed_tasks.jsonl
mkdir -p "$out"
M=(model=smollm2-135m num_threads=2 batch_size=16 progress=false overwrite=true)
alignkit data self-chat input=$seeds output=$out/chats.jsonl "${M[@]}" max_turns=2 assistant.max_new_tokens=64 \
  user.max_new_tokens=32
alignkit data sdf input=$out/chats.jsonl output=$out/sdf_best.jsonl preference_output=$out/sdf_pairs.jsonl "${M[@]}" \
  num_samples=4 generation.max_new_tokens=64
alignkit train algo=sft model=smollm2-135m data.name=sdf "data.sources=[{path: $out/sdf_best.jsonl, eval_size: 4}]" \
  data.max_length=256 trainer.batch_size=4 trainer.max_steps=10 trainer.lr=2e-5 trainer.eval_at_start=true \
  trainer.eval_steps=10 trainer.num_threads=2 trainer.progress=false logger=none trainer.run_dir=$out/sft
alignkit data translate input=$seeds output=$out/seeds_de.jsonl "${M[@]}" mode=post-answering target_languages=[de] \
  translation.max_new_tokens=96 answer.max_new_tokens=64
for f in chats sdf_best seeds_de; do cp "$out/$f.provenance.json" "$here/"; done
cp "$out/sft/metrics.jsonl" "$here/sft_metrics.jsonl"
