// CPU DPO kernel: one fused elementwise pass forward, one backward (math in alignkit/math.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "alignkit/ops.h"

namespace alignkit::cpu {

void dpo_fwd(const DpoArgs& a, at::Tensor& losses, at::Tensor& chosen_rewards,
             at::Tensor& rejected_rewards) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.pc.scalar_type(), "alignkit_dpo_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pc = a.pc.const_data_ptr<scalar_t>(), *pr = a.pr.const_data_ptr<scalar_t>(),
                   *rc = a.rc.const_data_ptr<scalar_t>(), *rr = a.rr.const_data_ptr<scalar_t>();
    scalar_t *loss = losses.mutable_data_ptr<scalar_t>(), *cr = chosen_rewards.mutable_data_ptr<scalar_t>(),
             *rj = rejected_rewards.mutable_data_ptr<scalar_t>();
    const acc_t beta = acc_t(a.beta), eps = acc_t(a.label_smoothing);
    at::parallel_for(0, a.pc.numel(), 1 << 18, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t h = (acc_t(pc[i]) - acc_t(pr[i])) - (acc_t(rc[i]) - acc_t(rr[i]));
        loss[i] = scalar_t(dpo_loss_grad(h, beta, a.type, eps).loss);
        cr[i] = scalar_t(beta * (acc_t(pc[i]) - acc_t(rc[i])));
        rj[i] = scalar_t(beta * (acc_t(pr[i]) - acc_t(rr[i])));
      }
    });
  });
}

void dpo_bwd(const DpoArgs& a, const at::Tensor& grad_losses, at::Tensor& grad_h) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.pc.scalar_type(), "alignkit_dpo_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pc = a.pc.const_data_ptr<scalar_t>(), *pr = a.pr.const_data_ptr<scalar_t>(),
                   *rc = a.rc.const_data_ptr<scalar_t>(), *rr = a.rr.const_data_ptr<scalar_t>(),
                   *g = grad_losses.const_data_ptr<scalar_t>();
    scalar_t* gh = grad_h.mutable_data_ptr<scalar_t>();
    const acc_t beta = acc_t(a.beta), eps = acc_t(a.label_smoothing);
    at::parallel_for(0, a.pc.numel(), 1 << 18, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t h = (acc_t(pc[i]) - acc_t(pr[i])) - (acc_t(rc[i]) - acc_t(rr[i]));
        gh[i] = scalar_t(acc_t(g[i]) * dpo_loss_grad(h, beta, a.type, eps).grad);
      }
    });
  });
}

}  // namespace alignkit::cpu
