// CUDA clipped value-loss kernels: per-row block sums forward, elementwise backward.
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

template <typename scalar_t>
__global__ void value_rows_kernel(const scalar_t* v, const scalar_t* v_old, const scalar_t* ret,
                                  const uint8_t* mask, int64_t T, acc_t<scalar_t> clip_eps,
                                  acc_t<scalar_t>* row_sums) {
  using acc = acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  acc s[3] = {0, 0, 0};  // loss, n, clipped
  for (int64_t i = b * T + threadIdx.x; i < (b + 1) * T; i += blockDim.x) {
    if (!mask[i]) continue;
    const auto tok = value_token<acc>(acc(v[i]), acc(v_old[i]), acc(ret[i]), clip_eps);
    s[0] += tok.loss;
    s[1] += acc(1);
    s[2] += tok.clipped;
  }
  block_sum<acc, 3>(s);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 3; ++k) row_sums[b * 3 + k] = s[k];
  }
}

template <typename scalar_t>
__global__ void value_bwd_kernel(const scalar_t* v, const scalar_t* v_old, const scalar_t* ret,
                                 const uint8_t* mask, int64_t B, int64_t T, acc_t<scalar_t> clip_eps,
                                 Agg agg, const acc_t<scalar_t>* grad_loss,
                                 const acc_t<scalar_t>* counts, scalar_t* grad_v) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * T; i += int64_t(gridDim.x) * blockDim.x) {
    if (!mask[i]) {
      grad_v[i] = scalar_t(0);
      continue;
    }
    const acc w = grad_loss[0] * agg_weight(agg, counts[i / T], counts[B], counts[B + 1]);
    grad_v[i] = scalar_t(w * value_token<acc>(acc(v[i]), acc(v_old[i]), acc(ret[i]), clip_eps).grad);
  }
}

}  // namespace

template <typename scalar_t>
void value_rows(const scalar_t* v, const scalar_t* v_old, const scalar_t* ret, const uint8_t* mask,
                int64_t B, int64_t T, double clip_eps, acc_t<scalar_t>* row_sums, cudaStream_t stream) {
  if (B == 0) return;
  value_rows_kernel<<<B, kThreads, 0, stream>>>(v, v_old, ret, mask, T, acc_t<scalar_t>(clip_eps), row_sums);
}

template <typename scalar_t>
void value_bwd(const scalar_t* v, const scalar_t* v_old, const scalar_t* ret, const uint8_t* mask,
               int64_t B, int64_t T, double clip_eps, Agg agg, const acc_t<scalar_t>* grad_loss,
               const acc_t<scalar_t>* counts, scalar_t* grad_v, cudaStream_t stream) {
  if (B * T == 0) return;
  value_bwd_kernel<<<grid_for(B * T), kThreads, 0, stream>>>(v, v_old, ret, mask, B, T,
                                                             acc_t<scalar_t>(clip_eps), agg, grad_loss,
                                                             counts, grad_v);
}

#define AK_ROWS(T)                                                                                 \
  void value_rows<T>(const T*, const T*, const T*, const uint8_t*, int64_t, int64_t, double, acc_t<T>*, \
                     cudaStream_t)
#define AK_BWD(T)                                                                                  \
  void value_bwd<T>(const T*, const T*, const T*, const uint8_t*, int64_t, int64_t, double, Agg,    \
                    const acc_t<T>*, const acc_t<T>*, T*, cudaStream_t)
AK_INSTANTIATE(AK_ROWS)
AK_INSTANTIATE(AK_BWD)

}  // namespace alignkit::cuda_launch
