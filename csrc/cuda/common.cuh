// Block-level reductions and type plumbing shared by the CUDA kernels.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "alignkit/cuda_launch.h"

namespace alignkit::cuda_launch {

constexpr int kThreads = 256;

// Explicit instantiation of a launcher for every supported input type.
#define AK_INSTANTIATE(FN)          \
  template FN(float);               \
  template FN(double);              \
  template FN(c10::Half);           \
  template FN(c10::BFloat16);

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of K values over the block (fixed reduction order: deterministic); every thread gets the result.
template <typename T, int K>
__device__ __forceinline__ void block_sum(T (&v)[K]) {
  __shared__ T shared[K][kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) shared[k][warp] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    T r = lane < blockDim.x / 32 ? shared[k][lane] : T(0);
    v[k] = warp_sum(r);
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ T block_max(T v) {
  __shared__ T shared[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = lane < blockDim.x / 32 ? shared[lane] : T(-INFINITY);
  r = warp_max(r);
  __syncthreads();
  return r;
}

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace alignkit::cuda_launch
