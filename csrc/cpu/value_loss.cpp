// CPU clipped value-loss kernel: per-row sums forward, per-token gradient backward.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "alignkit/ops.h"
#include "grain.h"

namespace alignkit::cpu {

void value_rows(const ValueArgs& a, at::Tensor& row_sums) {
  const int64_t B = a.values.size(0), T = a.values.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.values.scalar_type(), "alignkit_value_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *v = a.values.const_data_ptr<scalar_t>(), *vo = a.old_values.const_data_ptr<scalar_t>(),
                   *ret = a.returns.const_data_ptr<scalar_t>();
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    acc_t* out = row_sums.mutable_data_ptr<acc_t>();
    at::parallel_for(0, B, kRowGrain(T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc_t loss = 0, n = 0, clip = 0;
        for (int64_t i = b * T; i < (b + 1) * T; ++i) {
          if (!mask[i]) continue;
          const auto tok = value_token<acc_t>(v[i], vo[i], ret[i], acc_t(a.clip_eps));
          loss += tok.loss;
          n += 1;
          clip += tok.clipped;
        }
        out[b * 3] = loss, out[b * 3 + 1] = n, out[b * 3 + 2] = clip;
      }
    });
  });
}

void value_bwd(const ValueArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,
               at::Tensor& grad_values) {
  const int64_t B = a.values.size(0), T = a.values.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.values.scalar_type(), "alignkit_value_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *v = a.values.const_data_ptr<scalar_t>(), *vo = a.old_values.const_data_ptr<scalar_t>(),
                   *ret = a.returns.const_data_ptr<scalar_t>();
    const uint8_t* mask = a.mask.const_data_ptr<uint8_t>();
    const acc_t* cnt = counts.const_data_ptr<acc_t>();
    const acc_t g = grad_loss.const_data_ptr<acc_t>()[0];
    scalar_t* gv = grad_values.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, kRowGrain(T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const acc_t w = g * agg_weight(agg, cnt[b], cnt[B], cnt[B + 1]);
        for (int64_t i = b * T; i < (b + 1) * T; ++i) {
          gv[i] = mask[i] ? scalar_t(w * value_token<acc_t>(v[i], vo[i], ret[i], acc_t(a.clip_eps)).grad)
                          : scalar_t(0);
        }
      }
    });
  });
}

}  // namespace alignkit::cpu
