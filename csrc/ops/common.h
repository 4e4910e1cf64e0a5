// Helpers for the device-generic op drivers in csrc/ops (validation, layouts, device dispatch).
#pragma once

#include <ATen/ATen.h>

#include <string_view>

#include "alignkit/checks.h"
#include "alignkit/ops.h"

// Calls the CPU kernel build cpu::isa() picks: cpu::AVX512::fn(...), cpu::AVX2::fn(...) or
// cpu::DEFAULT::fn(...) (a statement). Only the builds compiled in are named.
#ifdef ALIGNKIT_CPU_AVX512
#define AK_CPU_CASE_AVX512(call) \
  case ::alignkit::cpu::Isa::kAvx512: ::alignkit::cpu::AVX512::call; break;
#else
#define AK_CPU_CASE_AVX512(call)
#endif
#ifdef ALIGNKIT_CPU_AVX2
#define AK_CPU_CASE_AVX2(call) \
  case ::alignkit::cpu::Isa::kAvx2: ::alignkit::cpu::AVX2::call; break;
#else
#define AK_CPU_CASE_AVX2(call)
#endif
#define AK_CPU_CALL(fn, ...)                                   \
  switch (::alignkit::cpu::isa()) {                            \
    AK_CPU_CASE_AVX512(fn(__VA_ARGS__))                        \
    AK_CPU_CASE_AVX2(fn(__VA_ARGS__))                          \
    default: ::alignkit::cpu::DEFAULT::fn(__VA_ARGS__); break; \
  }

// Calls the CPU kernel (AK_CPU_CALL) or cuda::fn(...) according to the device of `t` (a statement).
#ifdef ALIGNKIT_WITH_CUDA
#define AK_DEVICE_CALL(t, fn, ...)         \
  do {                                     \
    if ((t).is_cuda()) {                   \
      ::alignkit::cuda::fn(__VA_ARGS__);   \
    } else {                               \
      AK_CPU_CALL(fn, __VA_ARGS__)         \
    }                                      \
  } while (0)
#else
#define AK_DEVICE_CALL(t, fn, ...)                                                            \
  do {                                                                                        \
    TORCH_CHECK(!(t).is_cuda(), "alignkit: this build of alignkit._C has no CUDA kernels; "   \
                "rebuild with ALIGNKIT_CUDA=1");                                              \
    AK_CPU_CALL(fn, __VA_ARGS__)                                                              \
  } while (0)
#endif

namespace alignkit {

// fp32 accumulation (fp64 for fp64 inputs, so gradcheck is meaningful).
inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Rows of a [..., V] tensor with a contiguous last dim, without copying strided views
// (e.g. logits[:, :-1]): a uniform row stride when the leading dims flatten, else per-row offsets.
struct Rows {
  RowLayout layout;
  at::Tensor offsets;  // keeps layout.offsets alive
};

inline Rows row_layout(const at::Tensor& x) {
  Rows r;
  const int64_t d = x.dim();
  if (d <= 1) return r;
  bool flat = true;
  for (int64_t i = 0; i + 2 < d; ++i) {
    if (x.size(i) != 1 && x.stride(i) != x.stride(i + 1) * x.size(i + 1)) flat = false;
  }
  if (flat) {
    r.layout.stride = x.stride(d - 2);
    return r;
  }
  auto opts = x.options().dtype(at::kLong);
  at::Tensor off = at::zeros({1}, opts);
  for (int64_t i = 0; i + 1 < d; ++i) {
    off = (off.unsqueeze(-1) + at::arange(x.size(i), opts) * x.stride(i)).reshape(-1);
  }
  r.offsets = off.contiguous();
  r.layout.offsets = r.offsets.const_data_ptr<int64_t>();
  return r;
}

// Labels in [0, V) or == ignore_index; never read out of bounds.
inline void check_labels(const at::Tensor& labels, int64_t V, int64_t ignore_index) {
  if (labels.is_cuda()) {
    auto bad = labels.ne(ignore_index).logical_and(labels.lt(0).logical_or(labels.ge(V)));
    TORCH_CHECK(!bad.any().item<bool>(), "alignkit: `labels` must be in [0, ", V,
                ") or equal ignore_index=", ignore_index);
    return;
  }
  const int64_t i = cpu::DEFAULT::first_bad_label(labels, V, ignore_index);  // a scan: no vector build needed
  TORCH_CHECK(i < 0, "alignkit: `labels` must be in [0, ", V, ") or equal ignore_index=",
              ignore_index, "; found ", labels.const_data_ptr<int64_t>()[i], " at flat index ", i);
}

inline void check_temperature(double temperature) {
  TORCH_CHECK(temperature > 0, "alignkit: `temperature` must be > 0, got ", temperature);
}

inline DpoLoss parse_dpo_loss(std::string_view s) {
  if (s == "sigmoid") return DpoLoss::kSigmoid;
  if (s == "hinge") return DpoLoss::kHinge;
  if (s == "ipo") return DpoLoss::kIpo;
  if (s == "robust") return DpoLoss::kRobust;
  TORCH_CHECK(false, "alignkit: `loss_type` must be sigmoid, hinge, ipo or robust, got '", s, "'");
}

inline Agg parse_agg(std::string_view s) {
  if (s == "token-mean") return Agg::kTokenMean;
  if (s == "seq-mean-token-mean") return Agg::kSeqMeanTokenMean;
  if (s == "seq-mean-token-sum") return Agg::kSeqMeanTokenSum;
  TORCH_CHECK(false, "alignkit: `agg` must be token-mean, seq-mean-token-mean or seq-mean-token-sum, "
              "got '", s, "'");
}

inline KlEstimator parse_kl(std::string_view s) {
  if (s == "k1") return KlEstimator::kK1;
  if (s == "k3") return KlEstimator::kK3;
  TORCH_CHECK(false, "alignkit: `kl_estimator` must be k1 or k3, got '", s, "'");
}

// Validates a [B, T] (or [T]) float input against `ref` (same shape, dtype, device); returns it
// contiguous and 2-D.
// `t` must match `ref` (the op's first input) in shape, device and dtype.
inline void check_like(const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK(t.sizes() == ref.sizes(), "alignkit: `", name, "` must have shape ", ref.sizes(),
              ", got ", t.sizes());
  TORCH_CHECK(t.device() == ref.device(), "alignkit: `", name, "` is on ", t.device(),
              " but the other inputs are on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "alignkit: `", name, "` must have dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
}

inline at::Tensor bt_input(const char* name, const at::Tensor& t, const at::Tensor& ref) {
  check_like(name, t, ref);
  auto c = t.contiguous();
  return c.dim() == 1 ? c.unsqueeze(0) : c;
}

// `mask` (the shape and device of `ref`) as a contiguous uint8 tensor (1 = valid, from any nonzero value).
inline at::Tensor byte_mask(const at::Tensor& mask, const at::Tensor& ref) {
  TORCH_CHECK(mask.sizes() == ref.sizes(), "alignkit: `mask` must have shape ", ref.sizes(), ", got ",
              mask.sizes());
  TORCH_CHECK(mask.device() == ref.device(), "alignkit: `mask` is on ", mask.device(),
              " but the other inputs are on ", ref.device());
  return (mask.scalar_type() == at::kBool ? mask : mask.ne(0)).contiguous().view(at::kByte);
}

// The mask as a contiguous 2-D uint8 tensor (1 = valid).
inline at::Tensor bt_mask(const at::Tensor& mask, const at::Tensor& ref) {
  auto m = byte_mask(mask, ref);
  return m.dim() == 1 ? m.unsqueeze(0) : m;
}

inline void check_bt_first(const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() || t.device().is_cuda(), "alignkit: `", name,
              "` must be on CPU or CUDA, got ", t.device());
  TORCH_CHECK(t.is_floating_point(), "alignkit: `", name, "` must be a floating-point tensor, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1 || t.dim() == 2, "alignkit: `", name, "` must be [B, T] (or [T]), got shape ",
              t.sizes());
}

}  // namespace alignkit
