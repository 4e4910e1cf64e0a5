// CPU PPO policy-loss kernel: per-row sums forward (rows in parallel, each summed in order, so the
// result does not depend on the thread count), per-token gradient backward (math in alignkit/math.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "alignkit/ops.h"
#include "grain.h"

namespace alignkit::cpu {

void ppo_rows(const PpoArgs& a, at::Tensor& row_sums) {
  const int64_t B = a.logp.size(0), T = a.logp.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.logp.scalar_type(), "alignkit_ppo_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *lp = a.logp.const_data_ptr<scalar_t>(), *old = a.old_logp.const_data_ptr<scalar_t>(),
                   *adv = a.adv.const_data_ptr<scalar_t>();
    const scalar_t* ref = a.ref_logp ? a.ref_logp->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ent = a.entropy ? a.entropy->const_data_ptr<scalar_t>() : nullptr;
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    acc_t* out = row_sums.mutable_data_ptr<acc_t>();
    const acc_t ent_coef = acc_t(a.p.entropy_coef);
    at::parallel_for(0, B, kRowGrain(T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc_t loss = 0, n = 0, clip = 0, akl = 0, kl = 0, en = 0;
        for (int64_t i = b * T; i < (b + 1) * T; ++i) {
          if (!mask[i]) continue;
          const auto tok = ppo_token<acc_t>(lp[i], old[i], adv[i], ref ? acc_t(ref[i]) : acc_t(0), a.p);
          const acc_t lr = acc_t(lp[i]) - acc_t(old[i]);
          const acc_t e = ent ? acc_t(ent[i]) : acc_t(0);
          loss += tok.loss - ent_coef * e;
          n += 1;
          clip += tok.clipped;
          akl += acc_t(0.5) * lr * lr;
          kl += tok.kl;
          en += e;
        }
        acc_t* o = out + b * 6;
        o[0] = loss, o[1] = n, o[2] = clip, o[3] = akl, o[4] = kl, o[5] = en;
      }
    });
  });
}

void ppo_bwd(const PpoArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,
             at::Tensor& grad_logp, at::Tensor& grad_entropy) {
  const int64_t B = a.logp.size(0), T = a.logp.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.logp.scalar_type(), "alignkit_ppo_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *lp = a.logp.const_data_ptr<scalar_t>(), *old = a.old_logp.const_data_ptr<scalar_t>(),
                   *adv = a.adv.const_data_ptr<scalar_t>();
    const scalar_t* ref = a.ref_logp ? a.ref_logp->const_data_ptr<scalar_t>() : nullptr;
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    const acc_t* cnt = counts.const_data_ptr<acc_t>();
    const acc_t g = grad_loss.const_data_ptr<acc_t>()[0], ent_coef = acc_t(a.p.entropy_coef);
    scalar_t* gl = grad_logp.mutable_data_ptr<scalar_t>();
    scalar_t* ge = grad_entropy.defined() && grad_entropy.numel() ? grad_entropy.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, kRowGrain(T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const acc_t w = g * agg_weight(agg, cnt[b], cnt[B], cnt[B + 1]);
        for (int64_t i = b * T; i < (b + 1) * T; ++i) {
          if (!mask[i]) {
            gl[i] = scalar_t(0);
            if (ge) ge[i] = scalar_t(0);
            continue;
          }
          const auto tok = ppo_token<acc_t>(lp[i], old[i], adv[i], ref ? acc_t(ref[i]) : acc_t(0), a.p);
          gl[i] = scalar_t(w * tok.grad);
          if (ge) ge[i] = scalar_t(-w * ent_coef);
        }
      }
    });
  });
}

}  // namespace alignkit::cpu
