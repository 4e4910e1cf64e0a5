// CUDA kernels for log-probabilities over one vocabulary tile: one block per row, fp32 accumulation.
// The forward reads each logit once: every thread keeps an online log-sum-exp state over its 16-byte
// chunks of the row (rescaled only when its max grows), the block merges the states with lse_combine.
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

// 16 bytes of logits, loaded with one vector instruction.
template <typename scalar_t>
struct alignas(16) Chunk16 {
  scalar_t x[16 / sizeof(scalar_t)];
};

// Fold K logits into a thread's online state: one exp per logit, plus one rescale when the max grows.
// All -inf chunks are skipped (they add nothing, and -inf - -inf would poison the state).
template <typename acc, int K, bool kEntropy>
__device__ __forceinline__ void lse_push(LseState<acc>& st, const acc (&z)[K]) {
  acc cm = z[0];
#pragma unroll
  for (int k = 1; k < K; ++k) cm = max(cm, z[k]);
  if (!(cm > -INFINITY)) return;
  if (cm > st.m) {
    if (st.s > acc(0)) {
      const acc d = st.m - cm, e = exp(d);
      if (kEntropy) st.t = e * (st.t + st.s * d);
      st.s *= e;
    }
    st.m = cm;
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const acc d = z[k] - st.m, e = exp(d);
    st.s += e;
    if (kEntropy) st.t += e * d;
  }
}

template <typename scalar_t, bool kEntropy>
__global__ void lse_tile_kernel(LseTile<scalar_t> lt) {
  using acc = acc_t<scalar_t>;
  const TileRows<scalar_t>& a = lt.rows;
  const int64_t r = blockIdx.x;
  const int64_t y = a.labels[r];
  if (y == a.ignore_index) {
    if (lt.last && threadIdx.x == 0) {
      lt.logp[r] = lt.lse[r] = acc(0);
      if (kEntropy) lt.ent[r] = acc(0);
    }
    return;
  }
  const scalar_t* row = a.x + (a.offsets ? a.offsets[r] : r * a.stride);
  LseState<acc> st = lse_empty<acc>();
  // 16-byte chunks of kVec logits from the first aligned one; the unaligned head and the tail one by one
  constexpr int kVec = 16 / sizeof(scalar_t);
  const int64_t lead = (16 - reinterpret_cast<uintptr_t>(row) % 16) % 16 / sizeof(scalar_t);
  const int64_t head = lead < a.n ? lead : a.n;
  const int64_t chunks = (a.n - head) / kVec, body_end = head + chunks * kVec;
  const Chunk16<scalar_t>* body = reinterpret_cast<const Chunk16<scalar_t>*>(row + head);
  int64_t c = threadIdx.x;
  for (; c + blockDim.x < chunks; c += 2 * blockDim.x) {  // two loads in flight per thread
    const Chunk16<scalar_t> v0 = body[c], v1 = body[c + blockDim.x];
    acc z[2 * kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) z[k] = acc(v0.x[k]) * a.inv_temp, z[kVec + k] = acc(v1.x[k]) * a.inv_temp;
    lse_push<acc, 2 * kVec, kEntropy>(st, z);
  }
  if (c < chunks) {
    const Chunk16<scalar_t> v = body[c];
    acc z[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) z[k] = acc(v.x[k]) * a.inv_temp;
    lse_push<acc, kVec, kEntropy>(st, z);
  }
  for (int64_t j = threadIdx.x; j < head; j += blockDim.x) {
    acc z[1] = {acc(row[j]) * a.inv_temp};
    lse_push<acc, 1, kEntropy>(st, z);
  }
  for (int64_t j = body_end + threadIdx.x; j < a.n; j += blockDim.x) {
    acc z[1] = {acc(row[j]) * a.inv_temp};
    lse_push<acc, 1, kEntropy>(st, z);
  }
  LseState<acc> state = block_lse(st);
  if (threadIdx.x != 0) return;
  if (!lt.first) state = lse_combine(LseState<acc>{lt.m[r], lt.s[r], lt.t[r]}, state);
  if (y >= a.v0 && y < a.v0 + a.n) lt.zy[r] = acc(row[y - a.v0]) * a.inv_temp;
  if (lt.last) {
    lt.lse[r] = lse_value(state);
    const acc lp = lt.zy[r] - lt.lse[r];
    lt.logp[r] = lp < acc(0) ? lp : acc(0);
    if (kEntropy) lt.ent[r] = lse_entropy(state);
  } else {
    lt.m[r] = state.m, lt.s[r] = state.s, lt.t[r] = state.t;
  }
}

template <typename scalar_t>
__global__ void grad_tile_kernel(GradTile<scalar_t> gt) {
  using acc = acc_t<scalar_t>;
  const TileRows<scalar_t>& a = gt.rows;
  const int64_t r = blockIdx.x;
  const int64_t y = a.labels[r];
  scalar_t* out = gt.out + r * gt.out_stride;
  if (y == a.ignore_index) {
    for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) out[j] = scalar_t(0);
    return;
  }
  const scalar_t* row = a.x + (a.offsets ? a.offsets[r] : r * a.stride);
  const acc lse = gt.lse[r], ent = gt.ent[r], g = gt.g[r], ge = gt.g_ent ? gt.g_ent[r] : acc(0);
  for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) {
    acc d = logit_grad(acc(row[j]) * a.inv_temp, lse, ent, g, ge, a.inv_temp);
    if (a.v0 + j == y) d += g * a.inv_temp;
    out[j] = scalar_t(d);  // row[j] is read before out[j] is written: in-place is safe
  }
}

}  // namespace

template <typename scalar_t>
void lse_tile(const LseTile<scalar_t>& a, cudaStream_t stream) {
  if (a.rows.N == 0) return;
  if (a.with_entropy) {
    lse_tile_kernel<scalar_t, true><<<a.rows.N, kThreads, 0, stream>>>(a);
  } else {
    lse_tile_kernel<scalar_t, false><<<a.rows.N, kThreads, 0, stream>>>(a);
  }
}

template <typename scalar_t>
void grad_tile(const GradTile<scalar_t>& a, cudaStream_t stream) {
  if (a.rows.N == 0) return;
  grad_tile_kernel<scalar_t><<<a.rows.N, kThreads, 0, stream>>>(a);
}

#define AK_LSE(T) void lse_tile<T>(const LseTile<T>&, cudaStream_t)
#define AK_GRAD(T) void grad_tile<T>(const GradTile<T>&, cudaStream_t)
AK_INSTANTIATE(AK_LSE)
AK_INSTANTIATE(AK_GRAD)

}  // namespace alignkit::cuda_launch
