// C++ autograd for the small ops (dpo_loss_fwd, ppo_loss_fwd, value_loss_fwd, masked_whiten_fwd).
// The other ops' formulas are registered from Python (alignkit/ops/_kernels.py), whose torch.library autograd
// wrapper costs ~0.2 ms per call on the 2-core dev box: more than these kernels take at B·T = 64k.
// Here forward and backward cost a dispatcher call each.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "alignkit/ops.h"

namespace alignkit {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class DpoLossFunction : public torch::autograd::Function<DpoLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& policy_chosen,
                               const at::Tensor& policy_rejected, const at::Tensor& ref_chosen,
                               const at::Tensor& ref_rejected, double beta, std::string_view loss_type,
                               double label_smoothing) {
    static auto fwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::dpo_loss_fwd", "")
                          .typed<decltype(dpo_loss_fwd)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [losses, chosen_rewards, rejected_rewards, dloss_dh] =
        fwd.call(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type, label_smoothing);
    ctx->save_for_backward({dloss_dh});
    ctx->mark_non_differentiable({chosen_rewards, rejected_rewards, dloss_dh});
    ctx->set_materialize_grads(false);
    return {losses, chosen_rewards, rejected_rewards, dloss_dh};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // inputs: policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type, label_smoothing
    variable_list out(7);
    if (!grads[0].defined()) return out;
    static auto bwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::dpo_loss_bwd", "")
                          .typed<decltype(dpo_loss_bwd)>();
    const auto [pos, neg] = bwd.call(grads[0], ctx->get_saved_variables()[0]);
    // h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    out[0] = out[3] = pos;
    out[1] = out[2] = neg;
    return out;
  }
};

// Keeps the scalar arguments of the PPO / value losses on the context for backward.
void save_scalars(AutogradContext* ctx, std::initializer_list<std::pair<const char*, c10::IValue>> args) {
  for (const auto& [name, value] : args) ctx->saved_data[name] = value;
}

class PpoLossFunction : public torch::autograd::Function<PpoLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                               const at::Tensor& advantages, const at::Tensor& mask,
                               const std::optional<at::Tensor>& ref_logprobs,
                               const std::optional<at::Tensor>& entropy, double clip_eps, double clip_eps_high,
                               double dual_clip, double kl_coef, std::string_view kl_estimator,
                               double entropy_coef, std::string_view agg) {
    static auto fwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::ppo_loss_fwd", "")
                          .typed<decltype(ppo_loss_fwd)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, stats] = fwd.call(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy, clip_eps,
                                  clip_eps_high, dual_clip, kl_coef, kl_estimator, entropy_coef, agg);
    ctx->save_for_backward({logprobs, old_logprobs, advantages, mask, ref_logprobs.value_or(at::Tensor()),
                            entropy.value_or(at::Tensor())});
    save_scalars(ctx, {{"clip_eps", clip_eps}, {"clip_eps_high", clip_eps_high}, {"dual_clip", dual_clip},
                           {"kl_coef", kl_coef}, {"kl_estimator", std::string(kl_estimator)},
                           {"entropy_coef", entropy_coef}, {"agg", std::string(agg)}});
    ctx->mark_non_differentiable({stats});
    ctx->set_materialize_grads(false);
    return {loss, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(13);  // one per forward argument
    if (!grads[0].defined()) return out;
    static auto bwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::ppo_loss_bwd", "")
                          .typed<decltype(ppo_loss_bwd)>();
    const variable_list t = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    auto opt = [](const at::Tensor& x) { return x.defined() ? std::optional<at::Tensor>(x) : std::nullopt; };
    auto [grad_logp, grad_ent] =
        bwd.call(grads[0], t[0], t[1], t[2], t[3], opt(t[4]), opt(t[5]), d["clip_eps"].toDouble(),
                 d["clip_eps_high"].toDouble(), d["dual_clip"].toDouble(), d["kl_coef"].toDouble(),
                 d["kl_estimator"].toStringRef(), d["entropy_coef"].toDouble(), d["agg"].toStringRef());
    // old_logprobs, advantages and ref_logprobs are constants of the loss
    out[0] = grad_logp;
    if (t[5].defined()) out[5] = grad_ent;
    return out;
  }
};

class ValueLossFunction : public torch::autograd::Function<ValueLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& values, const at::Tensor& old_values,
                               const at::Tensor& returns, const at::Tensor& mask, double clip_eps,
                               std::string_view agg) {
    static auto fwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::value_loss_fwd", "")
                          .typed<decltype(value_loss_fwd)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, clipfrac] = fwd.call(values, old_values, returns, mask, clip_eps, agg);
    ctx->save_for_backward({values, old_values, returns, mask});
    save_scalars(ctx, {{"clip_eps", clip_eps}, {"agg", std::string(agg)}});
    ctx->mark_non_differentiable({clipfrac});
    ctx->set_materialize_grads(false);
    return {loss, clipfrac};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(6);  // one per forward argument; old_values and returns are constants
    if (!grads[0].defined()) return out;
    static auto bwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::value_loss_bwd", "")
                          .typed<decltype(value_loss_bwd)>();
    const variable_list t = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], t[0], t[1], t[2], t[3], ctx->saved_data["clip_eps"].toDouble(),
                      ctx->saved_data["agg"].toStringRef());
    return out;
  }
};

class MaskedWhitenFunction : public torch::autograd::Function<MaskedWhitenFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& mask) {
    static auto fwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::masked_whiten_fwd", "")
                          .typed<decltype(masked_whiten_fwd)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, stats] = fwd.call(x, mask);
    ctx->save_for_backward({x, mask, stats});
    ctx->mark_non_differentiable({stats});
    ctx->set_materialize_grads(false);
    return {y, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(2);  // x, mask
    if (!grads[0].defined()) return out;
    static auto bwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("alignkit::masked_whiten_bwd", "")
                          .typed<decltype(masked_whiten_bwd)>();
    const variable_list t = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], t[0], t[1], t[2]);
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dpo_loss_fwd_autograd(
    const at::Tensor& policy_chosen, const at::Tensor& policy_rejected, const at::Tensor& ref_chosen,
    const at::Tensor& ref_rejected, double beta, std::string_view loss_type, double label_smoothing) {
  const variable_list out = DpoLossFunction::apply(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                                   beta, loss_type, label_smoothing);
  return {out[0], out[1], out[2], out[3]};
}

std::tuple<at::Tensor, at::Tensor> ppo_loss_fwd_autograd(
    const at::Tensor& logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages,
    const at::Tensor& mask, const std::optional<at::Tensor>& ref_logprobs, const std::optional<at::Tensor>& entropy,
    double clip_eps, double clip_eps_high, double dual_clip, double kl_coef, std::string_view kl_estimator,
    double entropy_coef, std::string_view agg) {
  const variable_list out =
      PpoLossFunction::apply(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy, clip_eps,
                             clip_eps_high, dual_clip, kl_coef, kl_estimator, entropy_coef, agg);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> value_loss_fwd_autograd(const at::Tensor& values, const at::Tensor& old_values,
                                                           const at::Tensor& returns, const at::Tensor& mask,
                                                           double clip_eps, std::string_view agg) {
  const variable_list out = ValueLossFunction::apply(values, old_values, returns, mask, clip_eps, agg);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> masked_whiten_fwd_autograd(const at::Tensor& x, const at::Tensor& mask) {
  const variable_list out = MaskedWhitenFunction::apply(x, mask);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace alignkit

TORCH_LIBRARY_IMPL(alignkit, Autograd, m) {
  m.impl("dpo_loss_fwd", &alignkit::dpo_loss_fwd_autograd);
  m.impl("ppo_loss_fwd", &alignkit::ppo_loss_fwd_autograd);
  m.impl("value_loss_fwd", &alignkit::value_loss_fwd_autograd);
  m.impl("masked_whiten_fwd", &alignkit::masked_whiten_fwd_autograd);
}
