#!/usr/bin/env bash
# Compile-check alignkit's CUDA build without a GPU: every csrc/cuda/*.cu with nvcc for sm_80 and
# sm_90, plus the host sources of a CUDA build (ALIGNKIT_WITH_CUDA) for syntax. Nothing is cached or
# kept; exits non-zero on the first error. The CPU torch wheel lacks the CUDA headers
# (c10/cuda/impl/cuda_cmake_macros.h), so the CUDA wheel's headers are unpacked once into
# $ALIGNKIT_TORCH_CUDA_HEADERS (default /opt/torch-cuda-headers; ~15 s, 1.2 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

HDR="${ALIGNKIT_TORCH_CUDA_HEADERS:-/opt/torch-cuda-headers}"
TORCH_CUDA_VERSION="${ALIGNKIT_TORCH_CUDA_VERSION:-2.14.1}"
NVCC="${NVCC:-nvcc}"
JOBS="${JOBS:-$(nproc)}"

if [ ! -f "$HDR/torch/include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  echo "nvcc_check: unpacking torch==$TORCH_CUDA_VERSION CUDA headers into $HDR"
  python -m pip install --quiet --no-deps --target "$HDR" "torch==$TORCH_CUDA_VERSION"
fi

PYINC="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
export NVCC HDR PYINC
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
export out

compile_cu() {  # one .cu for both architectures
  "$NVCC" -std=c++20 -O3 --use_fast_math -c "$1" -o "$out/$(basename "$1").o" \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -I csrc/include -I "$HDR/torch/include" -DALIGNKIT_WITH_CUDA \
    && echo "ok  $1 (sm_80, sm_90)"
}
check_host() {  # host sources of a CUDA build: syntax and template instantiation only
  "$NVCC" -std=c++20 -x c++ -c "$1" -o /dev/null -Xcompiler -fsyntax-only \
    -I csrc/include -I "$HDR/torch/include" -I "$HDR/torch/include/torch/csrc/api/include" \
    -I "$PYINC" -DALIGNKIT_WITH_CUDA -DPy_LIMITED_API=0x03090000 \
    && echo "ok  $1 (host, CUDA build)"
}
export -f compile_cu check_host

status=0
printf '%s\n' csrc/cuda/*.cu | xargs -P "$JOBS" -I{} bash -c 'compile_cu {}' || status=1
printf '%s\n' csrc/cuda/*.cpp csrc/bindings.cpp csrc/autograd.cpp csrc/ops/*.cpp \
  | xargs -P "$JOBS" -I{} bash -c 'check_host {}' || status=1
if [ "$status" -ne 0 ]; then
  echo "nvcc_check: FAILED" >&2
  exit 1
fi
echo "nvcc_check: all CUDA sources compile"
