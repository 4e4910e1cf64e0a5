// CPU DPO kernels: one fused elementwise pass forward writing the losses, the rewards and dloss_dh;
// the backward turns the incoming gradient g into g·dloss_dh and -g·dloss_dh in one pass. Math in
// alignkit/math.h, run on 8 lanes at a time for float through Lanes (lanes.h).
#include <ATen/Dispatch.h>

#include "alignkit/ops.h"
#include "lanes.h"

namespace alignkit::cpu::CPU_CAPABILITY {

namespace {
// Pairs per parallel chunk (fixed chunks: the same bits on any thread count): B = 64k runs on both
// cores of the dev box (fwd+bwd 0.45-0.53 ms there, against 0.71-0.78 ms on one thread).
constexpr int64_t kDpoGrain = 1 << 14;
}  // namespace

void dpo_fwd(const DpoArgs& a, at::Tensor& losses, at::Tensor& chosen_rewards,
             at::Tensor& rejected_rewards, at::Tensor& dloss_dh) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.pc.scalar_type(), "alignkit_dpo_fwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    const scalar_t *pc = a.pc.const_data_ptr<scalar_t>(), *pr = a.pr.const_data_ptr<scalar_t>(),
                   *rc = a.rc.const_data_ptr<scalar_t>(), *rr = a.rr.const_data_ptr<scalar_t>();
    scalar_t *loss = losses.mutable_data_ptr<scalar_t>(), *cr = chosen_rewards.mutable_data_ptr<scalar_t>(),
             *rj = rejected_rewards.mutable_data_ptr<scalar_t>(), *dh = dloss_dh.mutable_data_ptr<scalar_t>();
    const T beta(a.beta), eps(a.label_smoothing);
    parallel_chunks(a.pc.numel(), kDpoGrain, [&](int64_t i0, int64_t i1) {
      for_steps<L>(i0, i1, [&](int64_t i, int64_t n) {
        const T c = L::load(pc + i, n), r = L::load(pr + i, n), c_ref = L::load(rc + i, n),
                r_ref = L::load(rr + i, n);
        const T h = (c - r) - (c_ref - r_ref);  // [n]
        const LossGrad<T> lg = dpo_loss_grad(h, beta, a.type, eps);
        L::store(lg.loss, loss + i, n);
        L::store(lg.grad, dh + i, n);
        L::store(beta * (c - c_ref), cr + i, n);
        L::store(beta * (r - r_ref), rj + i, n);
      });
    });
  });
}

void dpo_bwd(const at::Tensor& grad_losses, const at::Tensor& dloss_dh, at::Tensor& grad_pos,
             at::Tensor& grad_neg) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dloss_dh.scalar_type(), "alignkit_dpo_bwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    const scalar_t *g = grad_losses.const_data_ptr<scalar_t>(), *dh = dloss_dh.const_data_ptr<scalar_t>();
    scalar_t *gp = grad_pos.mutable_data_ptr<scalar_t>(), *gn = grad_neg.mutable_data_ptr<scalar_t>();
    parallel_chunks(dloss_dh.numel(), kDpoGrain, [&](int64_t i0, int64_t i1) {
      for_steps<L>(i0, i1, [&](int64_t i, int64_t n) {
        const T v = L::load(g + i, n) * L::load(dh + i, n);
        L::store(v, gp + i, n);
        L::store(T(0) - v, gn + i, n);
      });
    });
  });
}

}  // namespace alignkit::cpu::CPU_CAPABILITY
