// CPU GAE kernel: rows in parallel, each a reverse scan (alignkit::gae_row, shared with CUDA).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "alignkit/ops.h"

namespace alignkit::cpu::CPU_CAPABILITY {

void gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma,
         double lam, at::Tensor& advantages, at::Tensor& returns) {
  const int64_t B = rewards.size(0), T = rewards.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rewards.scalar_type(), "alignkit_gae", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *r = rewards.const_data_ptr<scalar_t>(), *v = values.const_data_ptr<scalar_t>();
    const uint8_t* m = mask.const_data_ptr<uint8_t>();
    scalar_t *adv = advantages.mutable_data_ptr<scalar_t>(), *ret = returns.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, std::max<int64_t>(1, 8192 / std::max<int64_t>(T, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        gae_row<scalar_t, uint8_t, acc_t>(r + b * T, v + b * T, m + b * T, adv + b * T, ret + b * T, T,
                                          acc_t(gamma), acc_t(lam));
      }
    });
  });
}

}  // namespace alignkit::cpu::CPU_CAPABILITY
