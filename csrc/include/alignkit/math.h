// Math shared by the CPU and CUDA kernels (host/device). Every formula lives here once, so the
// CPU tests exercise exactly what the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define AK_HD __host__ __device__ __forceinline__
#else
#define AK_HD inline
#endif

namespace alignkit {

// ---------------------------------------------------------------------------------------------
// Online log-sum-exp (with entropy)
// ---------------------------------------------------------------------------------------------
// Running softmax statistics of a set of logits z, relative to their max m:
//   s = Σ exp(z - m)            (0 for the empty set)
//   t = Σ exp(z - m) · (z - m)  (only needed for the entropy)
// Keeping t relative to m avoids the cancellation of lse - E[z] for logits of ±1e4.
template <typename acc_t>
struct LseState {
  acc_t m, s, t;
};

template <typename acc_t>
AK_HD LseState<acc_t> lse_empty() {
  return {-INFINITY, acc_t(0), acc_t(0)};
}

// Merge two partial states (order-independent up to rounding; callers fix the order).
template <typename acc_t>
AK_HD LseState<acc_t> lse_combine(LseState<acc_t> a, LseState<acc_t> b) {
  if (a.s == acc_t(0)) return b;
  if (b.s == acc_t(0)) return a;
  const acc_t m = a.m > b.m ? a.m : b.m;
  const acc_t da = a.m - m, db = b.m - m;  // both <= 0
  const acc_t ea = ::exp(da), eb = ::exp(db);
  return {m, a.s * ea + b.s * eb, ea * (a.t + a.s * da) + eb * (b.t + b.s * db)};
}

// log Σ exp(z) and the entropy -Σ p log p of softmax(z).
template <typename acc_t>
AK_HD acc_t lse_value(LseState<acc_t> st) { return st.m + ::log(st.s); }
template <typename acc_t>
AK_HD acc_t lse_entropy(LseState<acc_t> st) { return ::log(st.s) - st.t / st.s; }

// d/dz_v of (g · logp_y + gH · H) where z = x / T, times 1/T: the gradient w.r.t. the raw logit x_v,
// without the one-hot term (callers add g / T at the label).
//   d logp_y / dz_v = [v == y] - p_v,   dH / dz_v = -p_v · (log p_v + H).
template <typename acc_t>
AK_HD acc_t logit_grad(acc_t z, acc_t lse, acc_t ent, acc_t g, acc_t g_ent, acc_t inv_temp) {
  const acc_t logp = z - lse;
  return -::exp(logp) * (g + g_ent * (logp + ent)) * inv_temp;
}

// ---------------------------------------------------------------------------------------------
// Number types of the loss formulas. Every formula below is written once, branch-free, over a type
// T with the operations of Ops<T>: the primary template serves scalars (CUDA threads, the CPU's
// double / half / bfloat16 loops) and csrc/cpu/lanes.h specialises it for
// at::vec::Vectorized<float>, so the CPU kernels run these very formulas on 8 lanes at a time.
// Comparisons give a bool for scalars and a lane mask for vectors; `&` combines either.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct Ops {
#ifdef __CUDA_ARCH__
  static AK_HD T exp(T x) { return ::exp(x); }
  static AK_HD T log1p_unit(T x) { return ::log1p(x); }  // log(1 + x), called for x in [0, 1] only
#else
  static AK_HD T exp(T x) { return std::exp(x); }  // std:: picks the float overload for float
  static AK_HD T log1p_unit(T x) { return std::log1p(x); }
#endif
  static AK_HD T select(bool c, T a, T b) { return c ? a : b; }  // c ? a : b, lane by lane
};

// ---------------------------------------------------------------------------------------------
// Elementwise helpers with PyTorch's gradient conventions
// ---------------------------------------------------------------------------------------------
// Weight of `a` in d max(a, b): 1, 0.5 on ties (as torch.maximum), 0.
template <typename T>
AK_HD T max_weight(T a, T b) {
  using O = Ops<T>;
  return O::select(a > b, T(1), O::select(a == b, T(0.5), T(0)));
}

// σ(x), σ(-x), log σ(x) and log σ(-x) from one exp and one log1p, stable for large |x|.
template <typename T>
struct SigmoidTerms {
  T sig_pos, sig_neg, logsig_pos, logsig_neg;
};

template <typename T>
AK_HD SigmoidTerms<T> sigmoid_terms(T x) {
  using O = Ops<T>;
  const auto pos = x >= T(0);
  const T e = O::exp(O::select(pos, T(0) - x, x));  // exp(-|x|) in (0, 1]
  const T r = T(1) / (T(1) + e), l = O::log1p_unit(e);
  return {O::select(pos, r, e * r), O::select(pos, e * r, r),
          O::select(pos, T(0), x) - l,        // min(x, 0) - log(1 + e^-|x|)
          O::select(pos, T(0) - x, T(0)) - l};  // min(-x, 0) - log(1 + e^-|x|)
}

// ---------------------------------------------------------------------------------------------
// DPO (algorithms.md): loss and d loss / d h for h = (pc - pr) - (rc - rr), x = beta·h
// ---------------------------------------------------------------------------------------------
enum class DpoLoss : int64_t { kSigmoid = 0, kHinge = 1, kIpo = 2, kRobust = 3 };

template <typename T>
struct LossGrad {
  T loss, grad;
};

// Loss and gradient together: the forward keeps the gradient for backward (one exp serves both).
template <typename T>
AK_HD LossGrad<T> dpo_loss_grad(T h, T beta, DpoLoss type, T eps) {
  using O = Ops<T>;
  const T bh = beta * h;
  switch (type) {
    case DpoLoss::kHinge: {
      const T l = T(1) - bh;
      const auto active = l > T(0);
      return {O::select(active, l, T(0)), O::select(active, T(0) - beta, T(0))};
    }
    case DpoLoss::kIpo: {
      const T d = h - T(1) / (T(2) * beta);
      return {d * d, T(2) * d};
    }
    case DpoLoss::kRobust: {
      const T k = T(1) / (T(1) - T(2) * eps);
      const SigmoidTerms<T> s = sigmoid_terms(bh);
      return {((T(0) - (T(1) - eps)) * s.logsig_pos + eps * s.logsig_neg) * k,
              ((T(0) - (T(1) - eps)) * beta * s.sig_neg - eps * beta * s.sig_pos) * k};
    }
    case DpoLoss::kSigmoid:
    default: {
      const SigmoidTerms<T> s = sigmoid_terms(bh);
      return {(T(0) - (T(1) - eps)) * s.logsig_pos - eps * s.logsig_neg,
              (T(0) - (T(1) - eps)) * beta * s.sig_neg + eps * beta * s.sig_pos};
    }
  }
}

// ---------------------------------------------------------------------------------------------
// PPO policy loss per token (algorithms.md)
// ---------------------------------------------------------------------------------------------
enum class Agg : int64_t { kTokenMean = 0, kSeqMeanTokenMean = 1, kSeqMeanTokenSum = 2 };
enum class KlEstimator : int64_t { kK1 = 0, kK3 = 1 };

struct PpoParams {
  double clip_low, clip_high;  // ratio is clipped to [1 - clip_low, 1 + clip_high]
  double dual_clip;            // <= 0: disabled
  double kl_coef, entropy_coef;
  KlEstimator kl_estimator;
  bool has_ref, has_entropy;
};

template <typename T>
struct PpoToken {
  T loss;     // pg + kl_coef · kl  (the entropy term is added by the caller)
  T grad;     // d loss / d logp
  T clipped;  // 1 when the clipped branch is strictly larger
  T kl;
};

template <typename T>
AK_HD PpoToken<T> ppo_token(T logp, T old_logp, T adv, T ref_logp, const PpoParams& p) {
  using O = Ops<T>;
  const T ratio = O::exp(logp - old_logp);
  const T lo = T(1 - p.clip_low), hi = T(1 + p.clip_high);
  const T clipped_ratio = O::select(ratio < lo, lo, O::select(ratio > hi, hi, ratio));
  const T pg1 = (T(0) - adv) * ratio, pg2 = (T(0) - adv) * clipped_ratio;
  // d pg / d logp through max(pg1, pg2); clamp passes the gradient on [lo, hi] like torch.clamp.
  const T in_range = O::select((ratio >= lo) & (ratio <= hi), T(1), T(0));
  T pg = O::select(pg1 > pg2, pg1, pg2);
  T dpg = max_weight(pg1, pg2) * pg1 + max_weight(pg2, pg1) * pg1 * in_range;  // d(-A·r)/dlogp = -A·r
  if (p.dual_clip > 0) {
    const auto neg = adv < T(0);
    const T pg3 = T(0) - T(p.dual_clip) * adv;
    // weight of pg in min(pg, pg3) = weight of pg3 in max(pg3, pg)
    dpg = O::select(neg, dpg * max_weight(pg3, pg), dpg);
    pg = O::select(neg, O::select(pg < pg3, pg, pg3), pg);
  }
  T kl = T(0), dkl = T(0);
  if (p.has_ref) {
    const T d = ref_logp - logp;
    if (p.kl_estimator == KlEstimator::kK1) {
      kl = T(0) - d;
      dkl = T(1);
    } else {
      const T e = O::exp(d);
      kl = e - d - T(1);
      dkl = T(1) - e;
    }
  }
  return {pg + T(p.kl_coef) * kl, dpg + T(p.kl_coef) * dkl, O::select(pg2 > pg1, T(1), T(0)), kl};
}

// Clipped value loss 0.5·max((V-R)^2, (clip(V, Vold-ε, Vold+ε) - R)^2); clip_eps < 0 disables.
template <typename T>
struct ValueToken {
  T loss, grad, clipped;
};

template <typename T>
AK_HD ValueToken<T> value_token(T v, T v_old, T ret, double clip_eps) {
  using O = Ops<T>;
  const T d1 = v - ret, l1 = d1 * d1;
  if (clip_eps < 0) return {T(0.5) * l1, d1, T(0)};
  const T lo = v_old - T(clip_eps), hi = v_old + T(clip_eps);
  const T vc = O::select(v < lo, lo, O::select(v > hi, hi, v));
  const T d2 = vc - ret, l2 = d2 * d2;
  const T in_range = O::select((v >= lo) & (v <= hi), T(1), T(0));
  return {T(0.5) * O::select(l1 > l2, l1, l2),
          max_weight(l1, l2) * d1 + max_weight(l2, l1) * d2 * in_range,
          O::select(l2 > l1, T(1), T(0))};
}

// Per-token weight of d loss / d x_t for an aggregation (see alignkit.ops.reference.masked_agg):
// n_row = valid tokens in the row, n_total = valid tokens overall, n_rows = rows with a token.
template <typename acc_t>
AK_HD acc_t agg_weight(Agg agg, acc_t n_row, acc_t n_total, acc_t n_rows) {
  const acc_t one = 1;
  switch (agg) {
    case Agg::kSeqMeanTokenMean:
      return one / ((n_row > one ? n_row : one) * (n_rows > one ? n_rows : one));
    case Agg::kSeqMeanTokenSum:
      return one / (n_rows > one ? n_rows : one);
    case Agg::kTokenMean:
    default:
      return one / (n_total > one ? n_total : one);
  }
}

// ---------------------------------------------------------------------------------------------
// GAE: reverse scan of one row with padding anywhere (kernels.md)
// ---------------------------------------------------------------------------------------------
template <typename scalar_t, typename mask_t, typename acc_t>
AK_HD void gae_row(const scalar_t* r, const scalar_t* v, const mask_t* mask, scalar_t* adv,
                   scalar_t* ret, int64_t T, acc_t gamma, acc_t lam) {
  acc_t next_v = 0, next_a = 0;
  for (int64_t t = T - 1; t >= 0; --t) {
    if (mask[t] == mask_t(0)) {
      adv[t] = scalar_t(0);
      ret[t] = scalar_t(0);
      continue;
    }
    const acc_t vt = acc_t(v[t]);
    const acc_t delta = acc_t(r[t]) + gamma * next_v - vt;
    const acc_t a = delta + gamma * lam * next_a;
    adv[t] = scalar_t(a);
    ret[t] = scalar_t(a + vt);
    next_v = vt;
    next_a = a;
  }
}

// ---------------------------------------------------------------------------------------------
// masked_whiten (kernels.md): y = m·(x - μ)·rstd, rstd = (var + 1e-8)^-1/2, var unbiased over the
// n valid positions (the n - 1 and the n floored at 1), y = 0 at masked positions.
// ---------------------------------------------------------------------------------------------
// Count, mean and sum of squared deviations of a set of valid values. Kernels reduce fixed-size
// chunks on their own (two passes over a chunk that sits in cache) and merge the chunks in chunk
// order (Chan et al.'s pairwise update), so results do not depend on the number of threads and the
// variance has no E[x²] - E[x]² cancellation.
template <typename acc_t>
struct Moments {
  acc_t n, mean, m2;
};

template <typename acc_t>
AK_HD Moments<acc_t> moments_merge(Moments<acc_t> a, Moments<acc_t> b) {
  const acc_t n = a.n + b.n;
  if (b.n == acc_t(0)) return a;
  if (a.n == acc_t(0)) return b;
  const acc_t d = b.mean - a.mean, wb = b.n / n;
  return {n, a.mean + d * wb, a.m2 + b.m2 + d * d * a.n * wb};
}

// 1 / sqrt(unbiased variance + 1e-8)
template <typename acc_t>
AK_HD acc_t whiten_rstd(Moments<acc_t> all) {
  const acc_t nm1 = all.n > acc_t(1) ? all.n - acc_t(1) : acc_t(1);
#ifdef __CUDA_ARCH__
  return acc_t(1) / ::sqrt(all.m2 / nm1 + acc_t(1e-8));
#else
  return acc_t(1) / std::sqrt(all.m2 / nm1 + acc_t(1e-8));
#endif
}

// Backward: with xc = x - μ, on valid positions
//   dx = rstd·(g - Σmg / n) - xc·rstd³·Σ(m·g·xc) / (n - 1)  =  rstd·(g - mean_g) - xc·k.
template <typename acc_t>
struct WhitenGrad {
  acc_t mean_g, k;
};

template <typename acc_t>
AK_HD WhitenGrad<acc_t> whiten_grad_coefs(acc_t n, acc_t rstd, acc_t sum_g, acc_t sum_gxc) {
  const acc_t n1 = n > acc_t(1) ? n : acc_t(1), nm1 = n > acc_t(1) ? n - acc_t(1) : acc_t(1);
  return {sum_g / n1, rstd * rstd * rstd * sum_gxc / nm1};
}

}  // namespace alignkit
