// dpo_loss, ppo_loss and value_loss drivers: validation, allocation, device dispatch, aggregation.
#include <algorithm>
#include <vector>

#include "common.h"

namespace alignkit {

namespace {

// ---- DPO ----------------------------------------------------------------------------------------
struct DpoInputs {
  at::Tensor pc, pr, rc, rr;
};

DpoInputs dpo_inputs(const at::Tensor& pc, const at::Tensor& pr, const at::Tensor& rc,
                     const at::Tensor& rr, double beta, double label_smoothing, DpoLoss type) {
  AK_CHECK_SUPPORTED_DEVICE("policy_chosen", pc);
  AK_CHECK_FLOAT("policy_chosen", pc);
  auto same = [&](const char* name, const at::Tensor& t) {
    check_like(name, t, pc);
    return t.contiguous();
  };
  TORCH_CHECK(beta > 0, "alignkit: `beta` must be > 0, got ", beta);
  TORCH_CHECK(label_smoothing >= 0 && label_smoothing < 0.5, "alignkit: `label_smoothing` must be in "
              "[0, 0.5), got ", label_smoothing);
  return {pc.contiguous(), same("policy_rejected", pr), same("ref_chosen", rc),
          same("ref_rejected", rr)};
}

// ---- PPO / value: turn per-row sums into the aggregated loss ------------------------------------
// Both take the kernels' row sums [B, C] (column 0: the row's summed loss, column 1: its valid
// tokens n). On CPU in plain loops over the B rows: the dozen tiny ATen ops of the generic path
// cost ~10 us each on a small machine, more than the kernels themselves.
at::Tensor aggregate(const at::Tensor& rows, Agg agg) {
  if (rows.is_cpu()) {
    return AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "alignkit_aggregate", [&] {
      const at::Tensor r = rows.contiguous();
      const int64_t B = r.size(0), C = r.size(1);
      const scalar_t* p = r.const_data_ptr<scalar_t>();
      scalar_t total = 0, n_total = 0, rows_with_tokens = 0, per_row_mean = 0;
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t loss = p[b * C], n = p[b * C + 1];
        total += loss, n_total += n, rows_with_tokens += n > 0;
        per_row_mean += loss / std::max<scalar_t>(n, 1);
      }
      const scalar_t seqs = std::max<scalar_t>(rows_with_tokens, 1);
      const scalar_t v = agg == Agg::kSeqMeanTokenMean ? per_row_mean / seqs
                         : agg == Agg::kSeqMeanTokenSum ? total / seqs
                                                         : total / std::max<scalar_t>(n_total, 1);
      return at::scalar_tensor(v, rows.options());
    });
  }
  const at::Tensor loss_rows = rows.select(1, 0), n_rows = rows.select(1, 1);
  switch (agg) {
    case Agg::kSeqMeanTokenMean:
      return (loss_rows / n_rows.clamp_min(1)).sum() / n_rows.gt(0).sum().clamp_min(1).to(loss_rows.scalar_type());
    case Agg::kSeqMeanTokenSum:
      return loss_rows.sum() / n_rows.gt(0).sum().clamp_min(1).to(loss_rows.scalar_type());
    case Agg::kTokenMean:
    default:
      return loss_rows.sum() / n_rows.sum().clamp_min(1);
  }
}

// Σ over rows of columns [first, first + count) / max(Σ n, 1): the token-mean statistics.
at::Tensor token_mean_stats(const at::Tensor& rows, int64_t first, int64_t count) {
  if (rows.is_cpu()) {
    return AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "alignkit_token_mean_stats", [&] {
      const at::Tensor r = rows.contiguous();
      const int64_t B = r.size(0), C = r.size(1);
      const scalar_t* p = r.const_data_ptr<scalar_t>();
      std::vector<scalar_t> sums(count, 0);
      scalar_t n = 0;
      for (int64_t b = 0; b < B; ++b) {
        n += p[b * C + 1];
        for (int64_t k = 0; k < count; ++k) sums[k] += p[b * C + first + k];
      }
      at::Tensor out = at::empty({count}, rows.options());
      for (int64_t k = 0; k < count; ++k) out.mutable_data_ptr<scalar_t>()[k] = sums[k] / std::max<scalar_t>(n, 1);
      return out;
    });
  }
  return rows.narrow(1, first, count).sum(0) / rows.select(1, 1).sum().clamp_min(1);
}

// counts [B + 2] = (valid tokens per row..., valid tokens overall, rows with a valid token).
at::Tensor token_counts(const at::Tensor& mask, at::ScalarType acc) {
  if (mask.is_cpu() && mask.scalar_type() == at::kByte && mask.is_contiguous()) {
    const int64_t B = mask.size(0), T = mask.size(1);
    const uint8_t* m = mask.const_data_ptr<uint8_t>();
    std::vector<double> c(B + 2, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      int64_t n = 0;
      for (int64_t t = 0; t < T; ++t) n += m[b * T + t] != 0;
      c[b] = double(n), c[B] += double(n), c[B + 1] += n > 0;
    }
    return at::tensor(c, mask.options().dtype(at::kDouble)).to(acc);
  }
  at::Tensor per_row = mask.sum(1, false, acc);
  return at::cat({per_row, per_row.sum().view(1), per_row.gt(0).sum().to(acc).view(1)});
}

at::Tensor grad_scalar(const at::Tensor& grad_loss, const at::Tensor& ref, at::ScalarType acc) {
  TORCH_CHECK(grad_loss.numel() == 1, "alignkit: `grad_loss` must be a scalar");
  AK_CHECK_SAME_DEVICE("grad_loss", grad_loss, ref);
  return grad_loss.to(acc).reshape({1}).contiguous();
}

struct PpoInputs {
  at::Tensor logp, old_logp, adv, mask, ref, ent;
  PpoParams p;
  Agg agg;
  PpoArgs args() const {
    return {logp, old_logp, adv, mask, ref.defined() ? &ref : nullptr, ent.defined() ? &ent : nullptr, p};
  }
};

PpoInputs ppo_inputs(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                     const at::Tensor& advantages, const at::Tensor& mask,
                     const std::optional<at::Tensor>& ref_logprobs,
                     const std::optional<at::Tensor>& entropy, double clip_eps, double clip_eps_high,
                     double dual_clip, double kl_coef, std::string_view kl_estimator,
                     double entropy_coef, std::string_view agg) {
  check_bt_first("logprobs", logprobs);
  PpoInputs in;
  in.logp = bt_input("logprobs", logprobs, logprobs);
  in.old_logp = bt_input("old_logprobs", old_logprobs, logprobs);
  in.adv = bt_input("advantages", advantages, logprobs);
  in.mask = bt_mask(mask, logprobs);
  if (ref_logprobs.has_value() && ref_logprobs->defined())
    in.ref = bt_input("ref_logprobs", *ref_logprobs, logprobs);
  if (entropy.has_value() && entropy->defined()) in.ent = bt_input("entropy", *entropy, logprobs);
  TORCH_CHECK(clip_eps >= 0 && clip_eps_high >= 0, "alignkit: `clip_eps` and `clip_eps_high` must be >= 0");
  TORCH_CHECK(dual_clip <= 0 || dual_clip > 1, "alignkit: `dual_clip` must be > 1 (or None), got ",
              dual_clip);
  in.p = PpoParams{clip_eps, clip_eps_high, dual_clip, kl_coef, entropy_coef, parse_kl(kl_estimator),
                   in.ref.defined(), in.ent.defined()};
  in.agg = parse_agg(agg);
  return in;
}

struct ValueInputs {
  at::Tensor values, old_values, returns, mask;
  double clip_eps;
  Agg agg;
  ValueArgs args() const { return {values, old_values, returns, mask, clip_eps}; }
};

ValueInputs value_inputs(const at::Tensor& values, const at::Tensor& old_values,
                         const at::Tensor& returns, const at::Tensor& mask, double clip_eps,
                         std::string_view agg) {
  check_bt_first("values", values);
  return {bt_input("values", values, values), bt_input("old_values", old_values, values),
          bt_input("returns", returns, values), bt_mask(mask, values), clip_eps, parse_agg(agg)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dpo_loss_fwd(
    const at::Tensor& policy_chosen, const at::Tensor& policy_rejected,
    const at::Tensor& ref_chosen, const at::Tensor& ref_rejected, double beta,
    std::string_view loss_type, double label_smoothing) {
  const DpoLoss type = parse_dpo_loss(loss_type);
  const DpoInputs in = dpo_inputs(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta,
                                  label_smoothing, type);
  at::Tensor losses = at::empty_like(in.pc), cr = at::empty_like(in.pc), rj = at::empty_like(in.pc),
             dh = at::empty_like(in.pc);
  const DpoArgs a{in.pc, in.pr, in.rc, in.rr, beta, type, label_smoothing};
  AK_DEVICE_CALL(in.pc, dpo_fwd, a, losses, cr, rj, dh);
  return {losses, cr, rj, dh};
}

// The forward computed d loss / d h with the loss (the same exp serves both), so backward is one
// multiply: (g·dh, -g·dh) = the gradients w.r.t. (policy_chosen, policy_rejected); the refs' are the
// same two, swapped, as h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected).
std::tuple<at::Tensor, at::Tensor> dpo_loss_bwd(const at::Tensor& grad_losses, const at::Tensor& dloss_dh) {
  AK_CHECK_SHAPE("grad_losses", grad_losses, dloss_dh.sizes());
  AK_CHECK_SAME_DEVICE("grad_losses", grad_losses, dloss_dh);
  const at::Tensor g = grad_losses.to(dloss_dh.scalar_type()).contiguous(), dh = dloss_dh.contiguous();
  at::Tensor grad_pos = at::empty_like(dh), grad_neg = at::empty_like(dh);
  AK_DEVICE_CALL(dh, dpo_bwd, g, dh, grad_pos, grad_neg);
  return {grad_pos, grad_neg};
}

std::tuple<at::Tensor, at::Tensor> ppo_loss_fwd(
    const at::Tensor& logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages,
    const at::Tensor& mask, const std::optional<at::Tensor>& ref_logprobs,
    const std::optional<at::Tensor>& entropy, double clip_eps, double clip_eps_high,
    double dual_clip, double kl_coef, std::string_view kl_estimator, double entropy_coef,
    std::string_view agg) {
  const PpoInputs in = ppo_inputs(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy,
                                  clip_eps, clip_eps_high, dual_clip, kl_coef, kl_estimator,
                                  entropy_coef, agg);
  const auto acc = acc_dtype(in.logp.scalar_type());
  at::Tensor rows = at::empty({in.logp.size(0), 6}, in.logp.options().dtype(acc));
  AK_DEVICE_CALL(in.logp, ppo_rows, in.args(), rows);
  const at::Tensor loss = aggregate(rows, in.agg);
  const at::Tensor stats = token_mean_stats(rows, 2, 4);
  return {loss.to(logprobs.scalar_type()), stats.to(logprobs.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> ppo_loss_bwd(
    const at::Tensor& grad_loss, const at::Tensor& logprobs, const at::Tensor& old_logprobs,
    const at::Tensor& advantages, const at::Tensor& mask,
    const std::optional<at::Tensor>& ref_logprobs, const std::optional<at::Tensor>& entropy,
    double clip_eps, double clip_eps_high, double dual_clip, double kl_coef,
    std::string_view kl_estimator, double entropy_coef, std::string_view agg) {
  const PpoInputs in = ppo_inputs(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy,
                                  clip_eps, clip_eps_high, dual_clip, kl_coef, kl_estimator,
                                  entropy_coef, agg);
  const auto acc = acc_dtype(in.logp.scalar_type());
  const at::Tensor g = grad_scalar(grad_loss, in.logp, acc), counts = token_counts(in.mask, acc);
  at::Tensor grad_logp = at::empty_like(in.logp);
  at::Tensor grad_ent = in.ent.defined() ? at::empty_like(in.logp) : at::empty({0}, in.logp.options());
  AK_DEVICE_CALL(in.logp, ppo_bwd, in.args(), in.agg, g, counts, grad_logp, grad_ent);
  return {grad_logp.view(logprobs.sizes()), in.ent.defined() ? grad_ent.view(logprobs.sizes()) : grad_ent};
}

std::tuple<at::Tensor, at::Tensor> value_loss_fwd(const at::Tensor& values,
                                                  const at::Tensor& old_values,
                                                  const at::Tensor& returns, const at::Tensor& mask,
                                                  double clip_eps, std::string_view agg) {
  const ValueInputs in = value_inputs(values, old_values, returns, mask, clip_eps, agg);
  const auto acc = acc_dtype(in.values.scalar_type());
  at::Tensor rows = at::empty({in.values.size(0), 3}, in.values.options().dtype(acc));
  AK_DEVICE_CALL(in.values, value_rows, in.args(), rows);
  const at::Tensor loss = aggregate(rows, in.agg);
  const at::Tensor clipfrac = token_mean_stats(rows, 2, 1).squeeze(0);
  return {loss.to(values.scalar_type()), clipfrac.to(values.scalar_type())};
}

at::Tensor value_loss_bwd(const at::Tensor& grad_loss, const at::Tensor& values,
                          const at::Tensor& old_values, const at::Tensor& returns,
                          const at::Tensor& mask, double clip_eps, std::string_view agg) {
  const ValueInputs in = value_inputs(values, old_values, returns, mask, clip_eps, agg);
  const auto acc = acc_dtype(in.values.scalar_type());
  const at::Tensor g = grad_scalar(grad_loss, in.values, acc), counts = token_counts(in.mask, acc);
  at::Tensor grad_values = at::empty_like(in.values);
  AK_DEVICE_CALL(in.values, value_bwd, in.args(), in.agg, g, counts, grad_values);
  return grad_values.view(values.sizes());
}

}  // namespace alignkit
