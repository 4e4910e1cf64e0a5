// CUDA DPO kernel: one fused elementwise pass that writes the losses, the rewards and dloss_dh (math
// in alignkit/math.h); the backward multiplies the incoming gradient by the latter (dispatch.cpp).
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

template <typename scalar_t>
__global__ void dpo_fwd_kernel(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc,
                               const scalar_t* rr, int64_t B, acc_t<scalar_t> beta, DpoLoss type,
                               acc_t<scalar_t> eps, scalar_t* losses, scalar_t* cr, scalar_t* rj,
                               scalar_t* dh) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B; i += int64_t(gridDim.x) * blockDim.x) {
    const acc h = (acc(pc[i]) - acc(pr[i])) - (acc(rc[i]) - acc(rr[i]));
    const LossGrad<acc> lg = dpo_loss_grad(h, beta, type, eps);
    losses[i] = scalar_t(lg.loss);
    dh[i] = scalar_t(lg.grad);
    cr[i] = scalar_t(beta * (acc(pc[i]) - acc(rc[i])));
    rj[i] = scalar_t(beta * (acc(pr[i]) - acc(rr[i])));
  }
}

}  // namespace

template <typename scalar_t>
void dpo_fwd(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc, const scalar_t* rr, int64_t B,
             double beta, DpoLoss type, double eps, scalar_t* losses, scalar_t* chosen_rewards,
             scalar_t* rejected_rewards, scalar_t* dloss_dh, cudaStream_t stream) {
  if (B == 0) return;
  dpo_fwd_kernel<<<grid_for(B), kThreads, 0, stream>>>(pc, pr, rc, rr, B, acc_t<scalar_t>(beta), type,
                                                       acc_t<scalar_t>(eps), losses, chosen_rewards,
                                                       rejected_rewards, dloss_dh);
}

#define AK_FWD(T)                                                                                 \
  void dpo_fwd<T>(const T*, const T*, const T*, const T*, int64_t, double, DpoLoss, double, T*, T*, \
                  T*, T*, cudaStream_t)
AK_INSTANTIATE(AK_FWD)

}  // namespace alignkit::cuda_launch
