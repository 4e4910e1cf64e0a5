// Declarations shared by the bindings, the device-generic op drivers (csrc/ops) and the device
// kernels (csrc/cpu, csrc/cuda). Shapes: N rows (tokens), V vocabulary, H hidden, B×T batches.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "alignkit/math.h"

namespace alignkit {

// Rows of a [..., V] tensor whose last dim is contiguous: row r starts at
// base + (offsets ? offsets[r] : r * stride) elements.
struct RowLayout {
  int64_t stride = 0;
  const int64_t* offsets = nullptr;  // host or device pointer, same device as the data
};

// ---- ops (device-generic drivers; registered for CPU and CUDA in bindings.cpp) -------------------
std::tuple<at::Tensor, at::Tensor, at::Tensor> logprobs_fwd(const at::Tensor& logits,
                                                            const at::Tensor& labels,
                                                            int64_t ignore_index, double temperature,
                                                            bool with_entropy);
at::Tensor logprobs_bwd(const at::Tensor& grad_logp, const std::optional<at::Tensor>& grad_entropy,
                        const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& lse,
                        const at::Tensor& entropy, int64_t ignore_index, double temperature);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_fwd(
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& labels, int64_t ignore_index, double temperature, bool with_entropy,
    int64_t cache_cols);
std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_bwd(
    const at::Tensor& grad_logp, const std::optional<at::Tensor>& grad_entropy,
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& labels, const at::Tensor& lse, const at::Tensor& entropy, const at::Tensor& cache,
    int64_t ignore_index, double temperature, bool needs_hidden, bool needs_weight, bool needs_bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dpo_loss_fwd(
    const at::Tensor& policy_chosen, const at::Tensor& policy_rejected,
    const at::Tensor& ref_chosen, const at::Tensor& ref_rejected, double beta,
    std::string_view loss_type, double label_smoothing);
std::tuple<at::Tensor, at::Tensor> dpo_loss_bwd(const at::Tensor& grad_losses, const at::Tensor& dloss_dh);

std::tuple<at::Tensor, at::Tensor> ppo_loss_fwd(
    const at::Tensor& logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages,
    const at::Tensor& mask, const std::optional<at::Tensor>& ref_logprobs,
    const std::optional<at::Tensor>& entropy, double clip_eps, double clip_eps_high,
    double dual_clip, double kl_coef, std::string_view kl_estimator, double entropy_coef,
    std::string_view agg);
std::tuple<at::Tensor, at::Tensor> ppo_loss_bwd(
    const at::Tensor& grad_loss, const at::Tensor& logprobs, const at::Tensor& old_logprobs,
    const at::Tensor& advantages, const at::Tensor& mask,
    const std::optional<at::Tensor>& ref_logprobs, const std::optional<at::Tensor>& entropy,
    double clip_eps, double clip_eps_high, double dual_clip, double kl_coef,
    std::string_view kl_estimator, double entropy_coef, std::string_view agg);

std::tuple<at::Tensor, at::Tensor> value_loss_fwd(const at::Tensor& values,
                                                  const at::Tensor& old_values,
                                                  const at::Tensor& returns, const at::Tensor& mask,
                                                  double clip_eps, std::string_view agg);
at::Tensor value_loss_bwd(const at::Tensor& grad_loss, const at::Tensor& values,
                          const at::Tensor& old_values, const at::Tensor& returns,
                          const at::Tensor& mask, double clip_eps, std::string_view agg);

std::tuple<at::Tensor, at::Tensor> gae(const at::Tensor& rewards, const at::Tensor& values,
                                       const at::Tensor& mask, double gamma, double lam);

std::tuple<at::Tensor, at::Tensor> masked_whiten_fwd(const at::Tensor& x, const at::Tensor& mask);
at::Tensor masked_whiten_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask,
                             const at::Tensor& stats);

// ---- per-device kernels ---------------------------------------------------------------------------
// Online softmax over one vocabulary tile [v0, v0 + n) of N rows: folds the tile into the per-row
// state (m, s, t) [N] (acc dtype) and picks up z_y when the label falls in the tile. With `last`,
// writes logp, lse, entropy [N]. Labels are already validated and never ignore_index here unless
// `skip_ignored` (then the row is skipped and its outputs are 0).
struct LseTileArgs {
  const at::Tensor& x;  // [N, n] rows of the tile (any float dtype), RowLayout below
  RowLayout layout;
  const at::Tensor& labels;  // [N] int64
  int64_t v0;
  int64_t ignore_index;
  double inv_temp;
  bool with_entropy, first, last;
  at::Tensor& m;  // [N] acc
  at::Tensor& s;
  at::Tensor& t;
  at::Tensor& zy;
  at::Tensor& logp;  // [N] acc (written when last)
  at::Tensor& lse;
  at::Tensor& entropy;
};

// Gradient of one tile: out[r, j] = logit_grad(...) + [v0 + j == y_r] · g_r / T (0 on ignored rows).
struct GradTileArgs {
  const at::Tensor& x;  // [N, n] tile (may alias out)
  RowLayout layout;
  const at::Tensor& labels;
  int64_t v0;
  int64_t ignore_index;
  double inv_temp;
  const at::Tensor& lse;     // [N] acc
  const at::Tensor& entropy;  // [N] acc
  const at::Tensor& g;        // [N] acc
  const at::Tensor* g_ent;    // [N] acc or nullptr
  at::Tensor& out;            // [N, n], dtype of x, unit column stride, rows out.stride(0) apart
};

// Elementwise DPO over [B] (all contiguous, same dtype).
struct DpoArgs {
  const at::Tensor &pc, &pr, &rc, &rr;
  double beta;
  DpoLoss type;
  double label_smoothing;
};

// PPO / value inputs: [B, T] contiguous, same float dtype; mask [B, T] uint8 (1 = valid).
struct PpoArgs {
  const at::Tensor &logp, &old_logp, &adv, &mask;
  const at::Tensor* ref_logp;  // nullptr when absent
  const at::Tensor* entropy;   // nullptr when absent
  PpoParams p;
};
struct ValueArgs {
  const at::Tensor &values, &old_values, &returns, &mask;
  double clip_eps;  // < 0: no clipping
};

// masked_whiten: x, grad, y, dx flat [N] contiguous (dtype of x), mask [N] uint8, stats [3] acc dtype
// = (mean, rstd, n) of the valid x, written by whiten_fwd on the device of x.
// Per-row sums of the valid tokens (acc dtype): PPO [B, 6] = (loss, n, clipped, 0.5·log_ratio²,
// kl, entropy), value [B, 3] = (loss, n, clipped). Backward takes `counts` [B + 2] = (valid tokens
// per row..., valid tokens overall, rows with a valid token) and the 0-d grad of the loss.
#define ALIGNKIT_DEVICE_KERNELS                                                                   \
  void lse_tile(const LseTileArgs& a);                                                            \
  void grad_tile(const GradTileArgs& a);                                                          \
  void dpo_fwd(const DpoArgs& a, at::Tensor& losses, at::Tensor& chosen_rewards,                  \
               at::Tensor& rejected_rewards, at::Tensor& dloss_dh);                               \
  void dpo_bwd(const at::Tensor& grad_losses, const at::Tensor& dloss_dh, at::Tensor& grad_pos,     \
               at::Tensor& grad_neg);                                                             \
  void ppo_rows(const PpoArgs& a, at::Tensor& row_sums);                                          \
  void ppo_bwd(const PpoArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,  \
               at::Tensor& grad_logp, at::Tensor& grad_entropy);                                  \
  void value_rows(const ValueArgs& a, at::Tensor& row_sums);                                      \
  void value_bwd(const ValueArgs& a, Agg agg, const at::Tensor& grad_loss,                        \
                 const at::Tensor& counts, at::Tensor& grad_values);                              \
  void gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask,            \
           double gamma, double lam, at::Tensor& advantages, at::Tensor& returns);                \
  void whiten_fwd(const at::Tensor& x, const at::Tensor& mask, at::Tensor& y, at::Tensor& stats); \
  void whiten_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask,            \
                  const at::Tensor& stats, at::Tensor& dx);

// The CPU kernels (csrc/cpu/*.cpp) are compiled once per instruction set, each build in its own
// namespace named after ATen's CPU_CAPABILITY: DEFAULT (no vector flags: runs anywhere torch does)
// and, on x86-64, AVX2 (+FMA, F16C) and AVX512 (F, BW, VL, DQ). cpu::isa() picks one at run time
// (common.h's AK_DEVICE_CALL goes through it); a build without ALIGNKIT_CPU_AVX2 / ALIGNKIT_CPU_AVX512
// has the DEFAULT kernels only.
namespace cpu {
#define ALIGNKIT_CPU_KERNELS \
  ALIGNKIT_DEVICE_KERNELS    \
  int64_t first_bad_label(const at::Tensor& labels, int64_t V, int64_t ignore_index);  // -1 if none
namespace DEFAULT {
ALIGNKIT_CPU_KERNELS
}  // namespace DEFAULT
namespace AVX2 {
ALIGNKIT_CPU_KERNELS
}  // namespace AVX2
namespace AVX512 {
ALIGNKIT_CPU_KERNELS
}  // namespace AVX512
#undef ALIGNKIT_CPU_KERNELS

// The kernel builds, in the order cpu::isa() prefers them.
enum class Isa { kDefault, kAvx2, kAvx512 };
// The build the running CPU uses: the best one compiled in that ATen also uses (ATen's choice,
// at::get_cpu_capability(), follows the CPU and the ATEN_CPU_CAPABILITY environment variable).
Isa isa();
const char* isa_name(Isa isa);  // "DEFAULT", "AVX2" or "AVX512"
bool isa_built(Isa isa);
}  // namespace cpu

#ifdef ALIGNKIT_WITH_CUDA
namespace cuda {
ALIGNKIT_DEVICE_KERNELS
}  // namespace cuda
#endif

}  // namespace alignkit
