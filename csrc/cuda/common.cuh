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

// Merge every thread's online log-sum-exp state (alignkit/math.h) over the block, in a fixed order
// (deterministic); every thread gets the result.
template <typename T>
__device__ __forceinline__ LseState<T> block_lse(LseState<T> st) {
  __shared__ T shared[3][kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) {
    const LseState<T> other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o),
                            __shfl_xor_sync(0xffffffffu, st.t, o)};
    st = lane < (lane ^ o) ? lse_combine(st, other) : lse_combine(other, st);
  }
  if (lane == 0) shared[0][warp] = st.m, shared[1][warp] = st.s, shared[2][warp] = st.t;
  __syncthreads();
  LseState<T> all = lse_empty<T>();
  for (int w = 0; w < int(blockDim.x / 32); ++w) all = lse_combine(all, LseState<T>{shared[0][w], shared[1][w], shared[2][w]});
  __syncthreads();
  return all;
}

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace alignkit::cuda_launch
