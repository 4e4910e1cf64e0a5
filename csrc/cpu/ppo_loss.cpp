// CPU PPO policy-loss kernel: per-row sums forward (rows in parallel, each summed in a fixed order,
// so the result does not depend on the thread count), per-token gradient backward. The formulas are
// alignkit/math.h's, run on 8 lanes at a time for float through Lanes (lanes.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "alignkit/ops.h"
#include "grain.h"
#include "lanes.h"

namespace alignkit::cpu::CPU_CAPABILITY {

void ppo_rows(const PpoArgs& a, at::Tensor& row_sums) {
  const int64_t B = a.logp.size(0), T_ = a.logp.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.logp.scalar_type(), "alignkit_ppo_fwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    using O = Ops<T>;
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *lp = a.logp.const_data_ptr<scalar_t>(), *old = a.old_logp.const_data_ptr<scalar_t>(),
                   *adv = a.adv.const_data_ptr<scalar_t>();
    const scalar_t* ref = a.ref_logp ? a.ref_logp->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ent = a.entropy ? a.entropy->const_data_ptr<scalar_t>() : nullptr;
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    acc_t* out = row_sums.mutable_data_ptr<acc_t>();
    const T ent_coef(a.p.entropy_coef), zero(0), one(1), half(0.5);
    at::parallel_for(0, B, kRowGrain(T_), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T loss = zero, n = zero, clip = zero, akl = zero, kl = zero, en = zero;
        for_steps<L>(b * T_, (b + 1) * T_, [&](int64_t i, int64_t w) {
          const auto valid = L::valid(mask + i, w);
          const T l = L::load(lp + i, w), o = L::load(old + i, w);
          const auto tok = ppo_token<T>(l, o, L::load(adv + i, w), ref ? L::load(ref + i, w) : zero, a.p);
          const T lr = l - o, e = ent ? L::load(ent + i, w) : zero;
          // select, not multiply: a NaN in a masked position must not leak into the sums
          loss = loss + O::select(valid, tok.loss - ent_coef * e, zero);
          n = n + O::select(valid, one, zero);
          clip = clip + O::select(valid, tok.clipped, zero);
          akl = akl + O::select(valid, half * lr * lr, zero);
          kl = kl + O::select(valid, tok.kl, zero);
          en = en + O::select(valid, e, zero);
        });
        acc_t* r = out + b * 6;
        r[0] = L::sum(loss), r[1] = L::sum(n), r[2] = L::sum(clip), r[3] = L::sum(akl), r[4] = L::sum(kl),
        r[5] = L::sum(en);
      }
    });
  });
}

void ppo_bwd(const PpoArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,
             at::Tensor& grad_logp, at::Tensor& grad_entropy) {
  const int64_t B = a.logp.size(0), T_ = a.logp.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.logp.scalar_type(), "alignkit_ppo_bwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    using O = Ops<T>;
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *lp = a.logp.const_data_ptr<scalar_t>(), *old = a.old_logp.const_data_ptr<scalar_t>(),
                   *adv = a.adv.const_data_ptr<scalar_t>();
    const scalar_t* ref = a.ref_logp ? a.ref_logp->const_data_ptr<scalar_t>() : nullptr;
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    const acc_t* cnt = counts.const_data_ptr<acc_t>();
    const acc_t g = grad_loss.const_data_ptr<acc_t>()[0], ent_coef = acc_t(a.p.entropy_coef);
    scalar_t* gl = grad_logp.mutable_data_ptr<scalar_t>();
    scalar_t* ge = grad_entropy.defined() && grad_entropy.numel() ? grad_entropy.mutable_data_ptr<scalar_t>() : nullptr;
    const T zero(0);
    at::parallel_for(0, B, kRowGrain(T_), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const acc_t w = g * agg_weight(agg, cnt[b], cnt[B], cnt[B + 1]);
        const T vw(w), vge(-w * ent_coef);
        for_steps<L>(b * T_, (b + 1) * T_, [&](int64_t i, int64_t n) {
          const auto valid = L::valid(mask + i, n);
          const auto tok = ppo_token<T>(L::load(lp + i, n), L::load(old + i, n), L::load(adv + i, n),
                                        ref ? L::load(ref + i, n) : zero, a.p);
          L::store(O::select(valid, vw * tok.grad, zero), gl + i, n);
          if (ge) L::store(O::select(valid, vge, zero), ge + i, n);
        });
      }
    });
  });
}

}  // namespace alignkit::cpu::CPU_CAPABILITY
