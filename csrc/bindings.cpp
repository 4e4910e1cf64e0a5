// The one place every alignkit op is declared: schemas (TORCH_LIBRARY) and the CPU/CUDA
// implementations (TORCH_LIBRARY_IMPL). Autograd formulas and fake kernels are registered from
// Python in alignkit/ops/_kernels.py, except the small losses' autograd (csrc/autograd.cpp).
// `_fwd` ops return what `_bwd` needs (row statistics).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "alignkit/ops.h"

TORCH_LIBRARY(alignkit, m) {
  // log_softmax(logits / T)[labels] → (logp, lse, entropy), fp32 [...] each; entropy is 0 unless asked.
  m.def("logprobs_fwd(Tensor logits, Tensor labels, int ignore_index, float temperature, "
        "bool with_entropy) -> (Tensor, Tensor, Tensor)");
  // d loss / d logits from the saved row statistics.
  m.def("logprobs_bwd(Tensor grad_logp, Tensor? grad_entropy, Tensor logits, Tensor labels, "
        "Tensor lse, Tensor entropy, int ignore_index, float temperature) -> Tensor");
  // logprobs of hidden @ weight.T + bias without the [N, V] logits → (logp, lse, entropy) [N] and
  // `cache` [N, cache_cols]: the logits of the last cache_cols vocabulary columns, kept for backward
  // (stored tile by tile: only the _bwd ops read it).
  m.def("fused_linear_logprobs_fwd(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, "
        "int ignore_index, float temperature, bool with_entropy, int cache_cols) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // (grad_hidden, grad_weight, grad_bias); a grad not asked for is an empty [0] tensor. `cache` is
  // the forward's (read only).
  m.def("fused_linear_logprobs_bwd(Tensor grad_logp, Tensor? grad_entropy, Tensor hidden, "
        "Tensor weight, Tensor? bias, Tensor labels, Tensor lse, Tensor entropy, Tensor cache, "
        "int ignore_index, float temperature, bool needs_hidden, bool needs_weight, bool needs_bias) "
        "-> (Tensor, Tensor, Tensor)");
  // DPO on [B] sequence log-probs → (losses, chosen_rewards, rejected_rewards, dloss_dh), the last
  // d losses / d h for h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected).
  m.def("dpo_loss_fwd(Tensor policy_chosen, Tensor policy_rejected, Tensor ref_chosen, "
        "Tensor ref_rejected, float beta, str loss_type, float label_smoothing) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // (g·dloss_dh, -g·dloss_dh): the gradients w.r.t. policy_chosen and policy_rejected.
  m.def("dpo_loss_bwd(Tensor grad_losses, Tensor dloss_dh) -> (Tensor, Tensor)");
  // Clipped PPO loss on [B, T] → (loss, stats[4] = clipfrac, approx_kl, kl, entropy).
  m.def("ppo_loss_fwd(Tensor logprobs, Tensor old_logprobs, Tensor advantages, Tensor mask, "
        "Tensor? ref_logprobs, Tensor? entropy, float clip_eps, float clip_eps_high, float dual_clip, "
        "float kl_coef, str kl_estimator, float entropy_coef, str agg) -> (Tensor, Tensor)");
  // (grad_logprobs, grad_entropy); grad_entropy is empty [0] without an entropy input.
  m.def("ppo_loss_bwd(Tensor grad_loss, Tensor logprobs, Tensor old_logprobs, Tensor advantages, "
        "Tensor mask, Tensor? ref_logprobs, Tensor? entropy, float clip_eps, float clip_eps_high, "
        "float dual_clip, float kl_coef, str kl_estimator, float entropy_coef, str agg) "
        "-> (Tensor, Tensor)");
  // Clipped value loss on [B, T] → (loss, clipfrac); clip_eps < 0 disables clipping.
  m.def("value_loss_fwd(Tensor values, Tensor old_values, Tensor returns, Tensor mask, "
        "float clip_eps, str agg) -> (Tensor, Tensor)");
  m.def("value_loss_bwd(Tensor grad_loss, Tensor values, Tensor old_values, Tensor returns, "
        "Tensor mask, float clip_eps, str agg) -> Tensor");
  // GAE on [B, T] with padding anywhere → (advantages, returns).
  m.def("gae(Tensor rewards, Tensor values, Tensor mask, float gamma, float lam) -> (Tensor, Tensor)");
  // Whitening over valid positions → (y, stats[3] = mean, rstd, n).
  m.def("masked_whiten_fwd(Tensor x, Tensor mask) -> (Tensor, Tensor)");
  m.def("masked_whiten_bwd(Tensor grad, Tensor x, Tensor mask, Tensor stats) -> Tensor");
}

// The drivers in csrc/ops are device-generic: they validate, allocate and call cpu:: or cuda::.
#define ALIGNKIT_IMPLS(m)                                                                    \
  m.impl("logprobs_fwd", &alignkit::logprobs_fwd);                                           \
  m.impl("logprobs_bwd", &alignkit::logprobs_bwd);                                           \
  m.impl("fused_linear_logprobs_fwd", &alignkit::fused_linear_logprobs_fwd);                 \
  m.impl("fused_linear_logprobs_bwd", &alignkit::fused_linear_logprobs_bwd);                 \
  m.impl("dpo_loss_fwd", &alignkit::dpo_loss_fwd);                                           \
  m.impl("dpo_loss_bwd", &alignkit::dpo_loss_bwd);                                           \
  m.impl("ppo_loss_fwd", &alignkit::ppo_loss_fwd);                                           \
  m.impl("ppo_loss_bwd", &alignkit::ppo_loss_bwd);                                           \
  m.impl("value_loss_fwd", &alignkit::value_loss_fwd);                                       \
  m.impl("value_loss_bwd", &alignkit::value_loss_bwd);                                       \
  m.impl("gae", &alignkit::gae);                                                             \
  m.impl("masked_whiten_fwd", &alignkit::masked_whiten_fwd);                                 \
  m.impl("masked_whiten_bwd", &alignkit::masked_whiten_bwd);

TORCH_LIBRARY_IMPL(alignkit, CPU, m) { ALIGNKIT_IMPLS(m) }

#ifdef ALIGNKIT_WITH_CUDA
TORCH_LIBRARY_IMPL(alignkit, CUDA, m) { ALIGNKIT_IMPLS(m) }
#endif

// `import alignkit._C` loads the library (which runs the registrations above). The module's own API
// says which build of the CPU kernels runs: cpu_isa() -> "DEFAULT", "AVX2" or "AVX512", and
// cpu_isas_built() -> the builds compiled in, e.g. "DEFAULT AVX2 AVX512".
namespace {
PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(alignkit::cpu::isa_name(alignkit::cpu::isa()));
}

PyObject* cpu_isas_built(PyObject*, PyObject*) {
  std::string names;
  for (auto i : {alignkit::cpu::Isa::kDefault, alignkit::cpu::Isa::kAvx2, alignkit::cpu::Isa::kAvx512}) {
    if (alignkit::cpu::isa_built(i)) names += std::string(names.empty() ? "" : " ") + alignkit::cpu::isa_name(i);
  }
  return PyUnicode_FromString(names.c_str());
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The build of the CPU kernels this process runs: DEFAULT, AVX2 or AVX512."},
    {"cpu_isas_built", cpu_isas_built, METH_NOARGS, "The builds of the CPU kernels compiled in, space-separated."},
    {nullptr, nullptr, 0, nullptr}};
}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module);
}
