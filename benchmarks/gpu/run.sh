#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool; see DEVELOPERS.md): build alignkit with its CUDA
# kernels for sm_90, run the CUDA op tests, `alignkit bench --device cuda` and benchmarks/gpu/sweep.py.
# Logs and results go to $OUT. Peers (TRL, Liger) come as wheels in .whl/ when carried.
# BENCH_SHAPES=all (or sweep) adds the other vocabularies and heads to the bench (default: targets).
set -uo pipefail
OUT="${OUT:-/tmp/alignkit-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="$(nproc)"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
stamp build
ALIGNKIT_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps --use-pep517 -e . >"$OUT/build.log" 2>&1 \
  || { tail -60 "$OUT/build.log"; exit 1; }
python3 -c "import torch, alignkit.ops as o; print('torch', torch.__version__, '| backend', o.get_backend())" || exit 1
stamp "CUDA op tests"
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -n 8 -k cuda tests/ops >"$OUT/tests.log" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
stamp "sweep"
timeout "${SWEEP_TIMEOUT:-150}" python3 benchmarks/gpu/sweep.py "$OUT/gpu_sweep.json" 2>&1 | tee "$OUT/sweep.log" | tail -40
stamp "alignkit bench --device cuda"
timeout "${BENCH_TIMEOUT:-240}" python3 -m alignkit.bench --device cuda --shapes "${BENCH_SHAPES:-targets}" \
  --json "$OUT/gpu_bench.json" --plot "$OUT/gpu_bench.png" 2>&1 | tee "$OUT/bench.log"
stamp done
