// CPU clipped value-loss kernel: per-row sums forward, per-token gradient backward (math in
// alignkit/math.h, run on 8 lanes at a time for float through Lanes, see lanes.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "alignkit/ops.h"
#include "grain.h"
#include "lanes.h"

namespace alignkit::cpu::CPU_CAPABILITY {

void value_rows(const ValueArgs& a, at::Tensor& row_sums) {
  const int64_t B = a.values.size(0), T_ = a.values.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.values.scalar_type(), "alignkit_value_fwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    using O = Ops<T>;
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *v = a.values.const_data_ptr<scalar_t>(), *vo = a.old_values.const_data_ptr<scalar_t>(),
                   *ret = a.returns.const_data_ptr<scalar_t>();
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    acc_t* out = row_sums.mutable_data_ptr<acc_t>();
    const T zero(0), one(1);
    at::parallel_for(0, B, kRowGrain(T_), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T loss = zero, n = zero, clip = zero;
        for_steps<L>(b * T_, (b + 1) * T_, [&](int64_t i, int64_t w) {
          const auto valid = L::valid(mask + i, w);
          const auto tok = value_token<T>(L::load(v + i, w), L::load(vo + i, w), L::load(ret + i, w), a.clip_eps);
          loss = loss + O::select(valid, tok.loss, zero);  // select: masked NaNs stay out
          n = n + O::select(valid, one, zero);
          clip = clip + O::select(valid, tok.clipped, zero);
        });
        out[b * 3] = L::sum(loss), out[b * 3 + 1] = L::sum(n), out[b * 3 + 2] = L::sum(clip);
      }
    });
  });
}

void value_bwd(const ValueArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,
               at::Tensor& grad_values) {
  const int64_t B = a.values.size(0), T_ = a.values.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.values.scalar_type(), "alignkit_value_bwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    using O = Ops<T>;
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *v = a.values.const_data_ptr<scalar_t>(), *vo = a.old_values.const_data_ptr<scalar_t>(),
                   *ret = a.returns.const_data_ptr<scalar_t>();
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    const acc_t* cnt = counts.const_data_ptr<acc_t>();
    const acc_t g = grad_loss.const_data_ptr<acc_t>()[0];
    scalar_t* gv = grad_values.mutable_data_ptr<scalar_t>();
    const T zero(0);
    at::parallel_for(0, B, kRowGrain(T_), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T w(g * agg_weight(agg, cnt[b], cnt[B], cnt[B + 1]));
        for_steps<L>(b * T_, (b + 1) * T_, [&](int64_t i, int64_t n) {
          const auto tok = value_token<T>(L::load(v + i, n), L::load(vo + i, n), L::load(ret + i, n), a.clip_eps);
          L::store(O::select(L::valid(mask + i, n), w * tok.grad, zero), gv + i, n);
        });
      }
    });
  });
}

}  // namespace alignkit::cpu::CPU_CAPABILITY
