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

// Whitening is two reductions and an elementwise pass; it is composed from ATen ops on every device
// (memory-bound and outside the training step's hot path). stats = (mean, rstd, n).
std::tuple<at::Tensor, at::Tensor> masked_whiten_fwd(const at::Tensor& x, const at::Tensor& mask) {
  AK_CHECK_FLOAT("x", x);
  AK_CHECK_SHAPE("mask", mask, x.sizes());
  AK_CHECK_SAME_DEVICE("mask", mask, x);
  const auto acc = acc_dtype(x.scalar_type());
  const at::Tensor m = mask.ne(0).to(acc), xf = x.to(acc);
  const at::Tensor n = m.sum();
  const at::Tensor mean = (xf * m).sum() / n.clamp_min(1);
  const at::Tensor xc = (xf - mean) * m;
  const at::Tensor var = (xc * xc).sum() / (n - 1).clamp_min(1);
  const at::Tensor rstd = (var + 1e-8).rsqrt();
  return {(xc * rstd).to(x.scalar_type()), at::stack({mean, rstd, n})};
}

at::Tensor masked_whiten_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask,
                             const at::Tensor& stats) {
  AK_CHECK_SHAPE("grad", grad, x.sizes());
  const auto acc = acc_dtype(x.scalar_type());
  const at::Tensor m = mask.ne(0).to(acc), st = stats.to(acc);
  const at::Tensor mean = st[0], rstd = st[1], n = st[2];
  const at::Tensor g = grad.to(acc) * m, xc = (x.to(acc) - mean) * m;
  const at::Tensor mean_g = g.sum() / n.clamp_min(1);
  const at::Tensor sum_gxc = (g * xc).sum();
  // alignkit::whiten_grad, vectorised over the tensor
  const at::Tensor dx = m * (rstd * (g - mean_g) - xc * rstd.pow(3) * sum_gxc / (n - 1).clamp_min(1));
  return dx.to(x.scalar_type());
}

}  // namespace alignkit
