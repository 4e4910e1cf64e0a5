// CUDA DPO kernels: one fused elementwise pass forward and one backward (math in alignkit/math.h).
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

template <typename scalar_t>
__global__ void dpo_fwd_kernel(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc,
                               const scalar_t* rr, int64_t B, acc_t<scalar_t> beta, DpoLoss type,
                               acc_t<scalar_t> eps, scalar_t* losses, scalar_t* cr, scalar_t* rj) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B; i += int64_t(gridDim.x) * blockDim.x) {
    const acc h = (acc(pc[i]) - acc(pr[i])) - (acc(rc[i]) - acc(rr[i]));
    losses[i] = scalar_t(dpo_loss_grad(h, beta, type, eps).loss);
    cr[i] = scalar_t(beta * (acc(pc[i]) - acc(rc[i])));
    rj[i] = scalar_t(beta * (acc(pr[i]) - acc(rr[i])));
  }
}

template <typename scalar_t>
__global__ void dpo_bwd_kernel(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc,
                               const scalar_t* rr, int64_t B, acc_t<scalar_t> beta, DpoLoss type,
                               acc_t<scalar_t> eps, const scalar_t* g, scalar_t* gh) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B; i += int64_t(gridDim.x) * blockDim.x) {
    const acc h = (acc(pc[i]) - acc(pr[i])) - (acc(rc[i]) - acc(rr[i]));
    gh[i] = scalar_t(acc(g[i]) * dpo_loss_grad(h, beta, type, eps).grad);
  }
}

}  // namespace

template <typename scalar_t>
void dpo_fwd(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc, const scalar_t* rr, int64_t B,
             double beta, DpoLoss type, double eps, scalar_t* losses, scalar_t* chosen_rewards,
             scalar_t* rejected_rewards, cudaStream_t stream) {
  if (B == 0) return;
  dpo_fwd_kernel<<<grid_for(B), kThreads, 0, stream>>>(pc, pr, rc, rr, B, acc_t<scalar_t>(beta), type,
                                                       acc_t<scalar_t>(eps), losses, chosen_rewards,
                                                       rejected_rewards);
}

template <typename scalar_t>
void dpo_bwd(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc, const scalar_t* rr, int64_t B,
             double beta, DpoLoss type, double eps, const scalar_t* grad_losses, scalar_t* grad_h,
             cudaStream_t stream) {
  if (B == 0) return;
  dpo_bwd_kernel<<<grid_for(B), kThreads, 0, stream>>>(pc, pr, rc, rr, B, acc_t<scalar_t>(beta), type,
                                                       acc_t<scalar_t>(eps), grad_losses, grad_h);
}

#define AK_FWD(T)                                                                                 \
  void dpo_fwd<T>(const T*, const T*, const T*, const T*, int64_t, double, DpoLoss, double, T*, T*, \
                  T*, cudaStream_t)
#define AK_BWD(T)                                                                                 \
  void dpo_bwd<T>(const T*, const T*, const T*, const T*, int64_t, double, DpoLoss, double,       \
                  const T*, T*, cudaStream_t)
AK_INSTANTIATE(AK_FWD)
AK_INSTANTIATE(AK_BWD)

}  // namespace alignkit::cuda_launch
