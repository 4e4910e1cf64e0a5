// CUDA PPO policy-loss kernels: one block per row sums the row's valid tokens (deterministic block
// reduction); backward is elementwise with the aggregation weight of the token's row.
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

template <typename scalar_t>
__global__ void ppo_rows_kernel(const scalar_t* logp, const scalar_t* old, const scalar_t* adv,
                                const uint8_t* mask, const scalar_t* ref, const scalar_t* ent,
                                int64_t T, PpoParams p, acc_t<scalar_t>* row_sums) {
  using acc = acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  acc s[6] = {0, 0, 0, 0, 0, 0};  // loss, n, clipped, 0.5·log_ratio², kl, entropy
  for (int64_t i = b * T + threadIdx.x; i < (b + 1) * T; i += blockDim.x) {
    if (!mask[i]) continue;
    const auto tok = ppo_token<acc>(acc(logp[i]), acc(old[i]), acc(adv[i]), ref ? acc(ref[i]) : acc(0), p);
    const acc lr = acc(logp[i]) - acc(old[i]), e = ent ? acc(ent[i]) : acc(0);
    s[0] += tok.loss - acc(p.entropy_coef) * e;
    s[1] += acc(1);
    s[2] += tok.clipped;
    s[3] += acc(0.5) * lr * lr;
    s[4] += tok.kl;
    s[5] += e;
  }
  block_sum<acc, 6>(s);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 6; ++k) row_sums[b * 6 + k] = s[k];
  }
}

template <typename scalar_t>
__global__ void ppo_bwd_kernel(const scalar_t* logp, const scalar_t* old, const scalar_t* adv,
                               const uint8_t* mask, const scalar_t* ref, int64_t B, int64_t T,
                               PpoParams p, Agg agg, const acc_t<scalar_t>* grad_loss,
                               const acc_t<scalar_t>* counts, scalar_t* grad_logp, scalar_t* grad_ent) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * T; i += int64_t(gridDim.x) * blockDim.x) {
    if (!mask[i]) {
      grad_logp[i] = scalar_t(0);
      if (grad_ent) grad_ent[i] = scalar_t(0);
      continue;
    }
    const acc w = grad_loss[0] * agg_weight(agg, counts[i / T], counts[B], counts[B + 1]);
    const auto tok = ppo_token<acc>(acc(logp[i]), acc(old[i]), acc(adv[i]), ref ? acc(ref[i]) : acc(0), p);
    grad_logp[i] = scalar_t(w * tok.grad);
    if (grad_ent) grad_ent[i] = scalar_t(-w * acc(p.entropy_coef));
  }
}

}  // namespace

template <typename scalar_t>
void ppo_rows(const scalar_t* logp, const scalar_t* old, const scalar_t* adv, const uint8_t* mask,
              const scalar_t* ref, const scalar_t* ent, int64_t B, int64_t T, PpoParams p,
              acc_t<scalar_t>* row_sums, cudaStream_t stream) {
  if (B == 0) return;
  ppo_rows_kernel<<<B, kThreads, 0, stream>>>(logp, old, adv, mask, ref, ent, T, p, row_sums);
}

template <typename scalar_t>
void ppo_bwd(const scalar_t* logp, const scalar_t* old, const scalar_t* adv, const uint8_t* mask,
             const scalar_t* ref, int64_t B, int64_t T, PpoParams p, Agg agg,
             const acc_t<scalar_t>* grad_loss, const acc_t<scalar_t>* counts, scalar_t* grad_logp,
             scalar_t* grad_ent, cudaStream_t stream) {
  if (B * T == 0) return;
  ppo_bwd_kernel<<<grid_for(B * T), kThreads, 0, stream>>>(logp, old, adv, mask, ref, B, T, p, agg,
                                                           grad_loss, counts, grad_logp, grad_ent);
}

#define AK_ROWS(T)                                                                              \
  void ppo_rows<T>(const T*, const T*, const T*, const uint8_t*, const T*, const T*, int64_t, int64_t, \
                   PpoParams, acc_t<T>*, cudaStream_t)
#define AK_BWD(T)                                                                               \
  void ppo_bwd<T>(const T*, const T*, const T*, const uint8_t*, const T*, int64_t, int64_t,     \
                  PpoParams, Agg, const acc_t<T>*, const acc_t<T>*, T*, T*, cudaStream_t)
AK_INSTANTIATE(AK_ROWS)
AK_INSTANTIATE(AK_BWD)

}  // namespace alignkit::cuda_launch
