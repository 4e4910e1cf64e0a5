// CUDA kernels for log-probabilities over one vocabulary tile: one block per row, fp32 accumulation,
// two passes over the row (max, then exp-sums relative to it), state merged with lse_combine.
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

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
  acc mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) mx = max(mx, acc(row[j]));
  const acc m = block_max(mx) * a.inv_temp;
  acc st[2] = {acc(0), acc(0)};  // Σ e^{z-m}, Σ e^{z-m}(z-m)
  for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) {
    const acc z = acc(row[j]) * a.inv_temp - m, e = exp(z);
    st[0] += e;
    if (kEntropy) st[1] += e * z;
  }
  block_sum<acc, 2>(st);
  if (threadIdx.x != 0) return;
  LseState<acc> state{m, st[0], st[1]};
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
  scalar_t* out = gt.out + r * a.n;
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
