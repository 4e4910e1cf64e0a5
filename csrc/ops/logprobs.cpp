// logprobs: log_softmax(logits / T)[label] (+ entropy) over [..., V] logits, one pass per row.
#include "common.h"

namespace alignkit {

namespace {
// logits [..., V] with a contiguous last dim; labels [...] int64.
void check_logprobs_inputs(const at::Tensor& logits, const at::Tensor& labels, double temperature) {
  AK_CHECK_SUPPORTED_DEVICE("logits", logits);
  AK_CHECK_FLOAT("logits", logits);
  TORCH_CHECK(logits.dim() >= 1 && logits.size(-1) >= 1,
              "alignkit: `logits` must be [..., V] with V >= 1, got shape ", logits.sizes());
  AK_CHECK_DTYPE("labels", labels, at::kLong);
  AK_CHECK_SAME_DEVICE("labels", labels, logits);
  TORCH_CHECK(labels.sizes() == logits.sizes().slice(0, logits.dim() - 1),
              "alignkit: `labels` must have shape logits.shape[:-1] = ",
              logits.sizes().slice(0, logits.dim() - 1), ", got ", labels.sizes());
  check_temperature(temperature);
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> logprobs_fwd(const at::Tensor& logits,
                                                            const at::Tensor& labels,
                                                            int64_t ignore_index, double temperature,
                                                            bool with_entropy) {
  check_logprobs_inputs(logits, labels, temperature);
  const at::Tensor x = logits.stride(-1) == 1 ? logits : logits.contiguous();
  const at::Tensor y = labels.contiguous().view(-1);  // [N]
  const int64_t N = y.numel(), V = x.size(-1);
  check_labels(y, V, ignore_index);
  const auto opts = x.options().dtype(acc_dtype(x.scalar_type()));
  at::Tensor logp = at::empty({N}, opts), lse = at::empty({N}, opts), zy = at::empty({N}, opts);
  at::Tensor ent = with_entropy ? at::empty({N}, opts) : at::zeros({N}, opts);
  at::Tensor none;
  if (N > 0) {
    const Rows rows = row_layout(x);
    const LseTileArgs a{x, rows.layout, y, 0, ignore_index, 1.0 / temperature, with_entropy,
                        /*first=*/true, /*last=*/true, none, none, none, zy, logp, lse, ent};
    AK_DEVICE_CALL(x, lse_tile, a);
  }
  return {logp.view(labels.sizes()), lse.view(labels.sizes()), ent.view(labels.sizes())};
}

at::Tensor logprobs_bwd(const at::Tensor& grad_logp, const std::optional<at::Tensor>& grad_entropy,
                        const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& lse,
                        const at::Tensor& entropy, int64_t ignore_index, double temperature) {
  check_logprobs_inputs(logits, labels, temperature);
  const at::Tensor x = logits.stride(-1) == 1 ? logits : logits.contiguous();
  const at::Tensor y = labels.contiguous().view(-1);
  const int64_t N = y.numel(), V = x.size(-1);
  const auto acc = acc_dtype(x.scalar_type());
  AK_CHECK_SHAPE("grad_logp", grad_logp, labels.sizes());
  auto flat = [&](const at::Tensor& t) { return t.to(acc).contiguous().view(-1); };
  const at::Tensor g = flat(grad_logp), l = flat(lse), h = flat(entropy);
  at::Tensor ge;
  if (grad_entropy.has_value() && grad_entropy->defined()) {
    AK_CHECK_SHAPE("grad_entropy", *grad_entropy, labels.sizes());
    ge = flat(*grad_entropy);
  }
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (N > 0) {
    const Rows rows = row_layout(x);
    at::Tensor out2d = out.view({N, V});
    const GradTileArgs a{x, rows.layout, y, 0, ignore_index, 1.0 / temperature, l, h, g,
                         ge.defined() ? &ge : nullptr, out2d};
    AK_DEVICE_CALL(x, grad_tile, a);
  }
  return out;
}

}  // namespace alignkit
