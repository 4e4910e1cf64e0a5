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
// Elementwise helpers with PyTorch's gradient conventions
// ---------------------------------------------------------------------------------------------
// Weight of `a` in d max(a, b): 1, 0.5 on ties (as torch.maximum), 0.
template <typename acc_t>
AK_HD acc_t max_weight(acc_t a, acc_t b) {
  return a > b ? acc_t(1) : (a == b ? acc_t(0.5) : acc_t(0));
}

// log σ(x), stable for large |x|.
template <typename acc_t>
AK_HD acc_t log_sigmoid(acc_t x) {
  return (x < acc_t(0) ? x : acc_t(0)) - ::log1p(::exp(-(x < acc_t(0) ? -x : x)));
}
template <typename acc_t>
AK_HD acc_t sigmoid(acc_t x) {
  return x >= acc_t(0) ? acc_t(1) / (acc_t(1) + ::exp(-x)) : ::exp(x) / (acc_t(1) + ::exp(x));
}

// ---------------------------------------------------------------------------------------------
// DPO (algorithms.md): loss and d loss / d h for h = (pc - pr) - (rc - rr)
// ---------------------------------------------------------------------------------------------
enum class DpoLoss : int64_t { kSigmoid = 0, kHinge = 1, kIpo = 2, kRobust = 3 };

template <typename acc_t>
struct LossGrad {
  acc_t loss, grad;
};

template <typename acc_t>
AK_HD LossGrad<acc_t> dpo_loss_grad(acc_t h, acc_t beta, DpoLoss type, acc_t eps) {
  const acc_t bh = beta * h;
  switch (type) {
    case DpoLoss::kHinge: {
      const acc_t l = acc_t(1) - bh;
      return {l > acc_t(0) ? l : acc_t(0), l > acc_t(0) ? -beta : acc_t(0)};
    }
    case DpoLoss::kIpo: {
      const acc_t d = h - acc_t(1) / (acc_t(2) * beta);
      return {d * d, acc_t(2) * d};
    }
    case DpoLoss::kRobust: {
      const acc_t k = acc_t(1) / (acc_t(1) - acc_t(2) * eps);
      return {(-(acc_t(1) - eps) * log_sigmoid(bh) + eps * log_sigmoid(-bh)) * k,
              (-(acc_t(1) - eps) * beta * sigmoid(-bh) - eps * beta * sigmoid(bh)) * k};
    }
    case DpoLoss::kSigmoid:
    default:
      return {-(acc_t(1) - eps) * log_sigmoid(bh) - eps * log_sigmoid(-bh),
              -(acc_t(1) - eps) * beta * sigmoid(-bh) + eps * beta * sigmoid(bh)};
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

template <typename acc_t>
struct PpoToken {
  acc_t loss;     // pg + kl_coef · kl  (the entropy term is added by the caller)
  acc_t grad;     // d loss / d logp
  acc_t clipped;  // 1 when the clipped branch is strictly larger
  acc_t kl;
};

template <typename acc_t>
AK_HD PpoToken<acc_t> ppo_token(acc_t logp, acc_t old_logp, acc_t adv, acc_t ref_logp,
                                const PpoParams& p) {
  const acc_t ratio = ::exp(logp - old_logp);
  const acc_t lo = acc_t(1) - acc_t(p.clip_low), hi = acc_t(1) + acc_t(p.clip_high);
  const acc_t clipped_ratio = ratio < lo ? lo : (ratio > hi ? hi : ratio);
  const acc_t pg1 = -adv * ratio, pg2 = -adv * clipped_ratio;
  // d pg / d logp through max(pg1, pg2); clamp passes the gradient on [lo, hi] like torch.clamp.
  const acc_t in_range = (ratio >= lo && ratio <= hi) ? acc_t(1) : acc_t(0);
  acc_t pg = pg1 > pg2 ? pg1 : pg2;
  acc_t dpg = max_weight(pg1, pg2) * pg1 + max_weight(pg2, pg1) * pg1 * in_range;  // d(-A·r)/dlogp = -A·r
  if (p.dual_clip > 0 && adv < acc_t(0)) {
    const acc_t pg3 = -acc_t(p.dual_clip) * adv;
    dpg *= max_weight(pg3, pg);  // weight of pg in min(pg, pg3) = weight of pg3 in max(pg3, pg)
    pg = pg < pg3 ? pg : pg3;
  }
  acc_t kl = 0, dkl = 0;
  if (p.has_ref) {
    const acc_t d = ref_logp - logp;
    if (p.kl_estimator == KlEstimator::kK1) {
      kl = -d;
      dkl = 1;
    } else {
      const acc_t e = ::exp(d);
      kl = e - d - acc_t(1);
      dkl = acc_t(1) - e;
    }
  }
  return {pg + acc_t(p.kl_coef) * kl, dpg + acc_t(p.kl_coef) * dkl, pg2 > pg1 ? acc_t(1) : acc_t(0),
          kl};
}

// Clipped value loss 0.5·max((V-R)^2, (clip(V, Vold-ε, Vold+ε) - R)^2); clip_eps < 0 disables.
template <typename acc_t>
struct ValueToken {
  acc_t loss, grad, clipped;
};

template <typename acc_t>
AK_HD ValueToken<acc_t> value_token(acc_t v, acc_t v_old, acc_t ret, acc_t clip_eps) {
  const acc_t d1 = v - ret, l1 = d1 * d1;
  if (clip_eps < acc_t(0)) return {acc_t(0.5) * l1, d1, acc_t(0)};
  const acc_t lo = v_old - clip_eps, hi = v_old + clip_eps;
  const acc_t vc = v < lo ? lo : (v > hi ? hi : v);
  const acc_t d2 = vc - ret, l2 = d2 * d2;
  const acc_t in_range = (v >= lo && v <= hi) ? acc_t(1) : acc_t(0);
  return {acc_t(0.5) * (l1 > l2 ? l1 : l2),
          max_weight(l1, l2) * d1 + max_weight(l2, l1) * d2 * in_range,
          l2 > l1 ? acc_t(1) : acc_t(0)};
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

// Gradient of y = m·(x - μ)·rstd, rstd = (var + eps)^-1/2, var unbiased over the n valid positions:
//   dx = m·rstd·(g - Σmg/n) - m·(x-μ)·rstd³·Σ(m·g·(x-μ)) / (n-1)
template <typename acc_t>
AK_HD acc_t whiten_grad(acc_t g, acc_t xc, acc_t rstd, acc_t mean_g, acc_t sum_gxc, acc_t n) {
  const acc_t nm1 = n - acc_t(1) > acc_t(1) ? n - acc_t(1) : acc_t(1);
  return rstd * (g - mean_g) - xc * rstd * rstd * rstd * sum_gxc / nm1;
}

}  // namespace alignkit
