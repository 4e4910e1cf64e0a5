// gae and masked_whiten drivers.
#include "common.h"

namespace alignkit {

std::tuple<at::Tensor, at::Tensor> gae(const at::Tensor& rewards, const at::Tensor& values,
                                       const at::Tensor& mask, double gamma, double lam) {
  check_bt_first("rewards", rewards);
  const at::Tensor r = bt_input("rewards", rewards, rewards), v = bt_input("values", values, rewards);
  const at::Tensor m = bt_mask(mask, rewards);
  at::Tensor adv = at::empty_like(r), ret = at::empty_like(r);
  AK_DEVICE_CALL(r, gae, r, v, m, gamma, lam, adv, ret);
  return {adv.view(rewards.sizes()), ret.view(rewards.sizes())};
}

// stats = (mean, rstd, n) of the valid x, in the accumulation dtype (saved for backward).
std::tuple<at::Tensor, at::Tensor> masked_whiten_fwd(const at::Tensor& x, const at::Tensor& mask) {
  AK_CHECK_SUPPORTED_DEVICE("x", x);
  AK_CHECK_FLOAT("x", x);
  const at::Tensor xf = x.contiguous().view(-1), m = byte_mask(mask, x).view(-1);
  at::Tensor y = at::empty_like(xf), stats = at::empty({3}, xf.options().dtype(acc_dtype(x.scalar_type())));
  AK_DEVICE_CALL(xf, whiten_fwd, xf, m, y, stats);
  return {y.view(x.sizes()), stats};
}

at::Tensor masked_whiten_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask,
                             const at::Tensor& stats) {
  AK_CHECK_SHAPE("grad", grad, x.sizes());
  AK_CHECK_SAME_DEVICE("grad", grad, x);
  TORCH_CHECK(stats.dim() == 1 && stats.size(0) == 3, "alignkit: `stats` must have shape [3], got ",
              stats.sizes());
  AK_CHECK_SAME_DEVICE("stats", stats, x);
  const at::Tensor xf = x.contiguous().view(-1), m = byte_mask(mask, x).view(-1);
  const at::Tensor g = grad.to(x.scalar_type()).contiguous().view(-1);
  const at::Tensor st = stats.to(acc_dtype(x.scalar_type())).contiguous();
  at::Tensor dx = at::empty_like(xf);
  AK_DEVICE_CALL(xf, whiten_bwd, g, xf, m, st, dx);
  return dx.view(x.sizes());
}

}  // namespace alignkit
