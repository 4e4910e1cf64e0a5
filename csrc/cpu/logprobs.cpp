// CPU kernels for log-probabilities: one vocabulary tile of N rows at a time (the whole vocabulary
// for `logprobs`, a [N, tile] block of logits for `fused_linear_logprobs`). Rows run in parallel;
// each row is reduced in a fixed order, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "alignkit/ops.h"

namespace alignkit::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kChunk = 2048;  // elements per L1-resident chunk of a row

template <typename acc_t>
using Vec = at::vec::Vectorized<acc_t>;

template <typename acc_t>
inline Vec<acc_t> vexp(const Vec<acc_t>& x) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return x.exp_u20();  // ~20 ulp, pure AVX2/AVX-512 (no libm call)
  } else {
    return x.exp();
  }
}

template <typename acc_t>
inline acc_t hmax(const Vec<acc_t>& v) {
  alignas(64) acc_t tmp[Vec<acc_t>::size()];
  v.store(tmp);
  acc_t r = tmp[0];
  for (int64_t i = 1; i < Vec<acc_t>::size(); ++i) r = std::max(r, tmp[i]);
  return r;
}

template <typename acc_t>
inline acc_t hsum(const Vec<acc_t>& v) {
  alignas(64) acc_t tmp[Vec<acc_t>::size()];
  v.store(tmp);
  acc_t r = 0;
  for (int64_t i = 0; i < Vec<acc_t>::size(); ++i) r += tmp[i];
  return r;
}

// Softmax statistics of z = x * inv_temp over one chunk, relative to the chunk's max.
template <bool kEntropy, typename acc_t>
LseState<acc_t> chunk_state(const acc_t* x, int64_t n, acc_t inv_temp) {
  constexpr int64_t W = Vec<acc_t>::size();
  int64_t i = 0;
  Vec<acc_t> vmax(-INFINITY);
  for (; i + W <= n; i += W) vmax = at::vec::maximum(vmax, Vec<acc_t>::loadu(x + i));
  acc_t mx = hmax(vmax);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  const acc_t m = mx * inv_temp;
  const Vec<acc_t> vinv(inv_temp), vneg_m(-m);
  Vec<acc_t> s0(0), s1(0), t0(0), t1(0);
  i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const auto z0 = at::vec::fmadd(Vec<acc_t>::loadu(x + i), vinv, vneg_m);
    const auto z1 = at::vec::fmadd(Vec<acc_t>::loadu(x + i + W), vinv, vneg_m);
    const auto e0 = vexp(z0), e1 = vexp(z1);
    s0 = s0 + e0;
    s1 = s1 + e1;
    if constexpr (kEntropy) {
      t0 = at::vec::fmadd(e0, z0, t0);
      t1 = at::vec::fmadd(e1, z1, t1);
    }
  }
  acc_t s = hsum(s0 + s1), t = kEntropy ? hsum(t0 + t1) : acc_t(0);
  for (; i < n; ++i) {
    const acc_t z = x[i] * inv_temp - m, e = std::exp(z);
    s += e;
    if constexpr (kEntropy) t += e * z;
  }
  return {m, s, t};
}

template <typename scalar_t>
inline const scalar_t* row_ptr(const scalar_t* base, const RowLayout& l, int64_t r) {
  return base + (l.offsets ? l.offsets[r] : r * l.stride);
}

// Row chunk as acc_t: the input itself when it already is acc_t, else converted into buf.
template <typename scalar_t, typename acc_t>
inline const acc_t* load_chunk(const scalar_t* p, int64_t n, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return p;
  } else {
    at::vec::convert(p, buf, n);
    return buf;
  }
}

template <typename scalar_t, bool kEntropy>
void lse_tile_impl(const LseTileArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = a.labels.numel(), n = a.x.size(-1);
  const scalar_t* base = a.x.const_data_ptr<scalar_t>();
  const int64_t* labels = a.labels.const_data_ptr<int64_t>();
  auto ptr = [](at::Tensor& x) { return x.defined() ? x.mutable_data_ptr<acc_t>() : nullptr; };
  // the running state is only touched when the vocabulary spans several tiles
  acc_t *m = ptr(a.m), *s = ptr(a.s), *t = ptr(a.t), *zy = ptr(a.zy);
  acc_t* logp = a.last ? a.logp.mutable_data_ptr<acc_t>() : nullptr;
  acc_t* lse = a.last ? a.lse.mutable_data_ptr<acc_t>() : nullptr;
  acc_t* ent = a.last && kEntropy ? a.entropy.mutable_data_ptr<acc_t>() : nullptr;
  const acc_t inv_temp = acc_t(a.inv_temp);
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(n, 1));
  at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
    alignas(64) acc_t buf[kChunk];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t y = labels[r];
      if (y == a.ignore_index) {
        if (a.last) {
          logp[r] = lse[r] = 0;
          if (ent) ent[r] = 0;
        }
        continue;
      }
      const scalar_t* row = row_ptr(base, a.layout, r);
      LseState<acc_t> st = a.first ? lse_empty<acc_t>() : LseState<acc_t>{m[r], s[r], t[r]};
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t len = std::min(kChunk, n - c0);
        st = lse_combine(st, chunk_state<kEntropy>(load_chunk(row + c0, len, buf), len, inv_temp));
      }
      if (y >= a.v0 && y < a.v0 + n) zy[r] = acc_t(row[y - a.v0]) * inv_temp;
      if (a.last) {
        lse[r] = lse_value(st);
        logp[r] = std::min(zy[r] - lse[r], acc_t(0));  // logp <= 0 even after rounding
        if (ent) ent[r] = lse_entropy(st);
      } else {
        m[r] = st.m, s[r] = st.s, t[r] = st.t;
      }
    }
  });
}

template <typename scalar_t>
void grad_tile_impl(const GradTileArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<acc_t>;
  constexpr int64_t W = V::size();
  const int64_t N = a.labels.numel(), n = a.x.size(-1);
  const scalar_t* base = a.x.const_data_ptr<scalar_t>();
  scalar_t* out = a.out.mutable_data_ptr<scalar_t>();
  const int64_t ld_out = a.out.stride(0);
  const int64_t* labels = a.labels.const_data_ptr<int64_t>();
  const acc_t *lse = a.lse.const_data_ptr<acc_t>(), *ent = a.entropy.const_data_ptr<acc_t>(),
              *g = a.g.const_data_ptr<acc_t>();
  const acc_t* g_ent = a.g_ent ? a.g_ent->const_data_ptr<acc_t>() : nullptr;
  const acc_t inv_temp = acc_t(a.inv_temp);
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(n, 1));
  at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
    alignas(64) acc_t buf[kChunk];
    alignas(64) acc_t res[kChunk];
    for (int64_t r = r0; r < r1; ++r) {
      scalar_t* orow = out + r * ld_out;
      const int64_t y = labels[r];
      if (y == a.ignore_index) {
        std::fill(orow, orow + n, scalar_t(0));
        continue;
      }
      const scalar_t* row = row_ptr(base, a.layout, r);
      // grad = -exp(z - lse) · (g + gH·(z - lse + H)) / T, with z - lse = x·invT - lse
      const acc_t gr = g[r], ge = g_ent ? g_ent[r] : acc_t(0), l = lse[r];
      const V vinv(inv_temp), vneg_l(-l), vg(gr), vge(ge), vH(ent[r]), vscale(-inv_temp);
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t len = std::min(kChunk, n - c0);
        const acc_t* x = load_chunk(row + c0, len, buf);
        int64_t i = 0;
        for (; i + W <= len; i += W) {
          const auto lp = at::vec::fmadd(V::loadu(x + i), vinv, vneg_l);
          auto coef = g_ent ? at::vec::fmadd(vge, lp + vH, vg) : vg;
          (vexp(lp) * coef * vscale).store(res + i);
        }
        for (; i < len; ++i) res[i] = logit_grad(x[i] * inv_temp, l, ent[r], gr, ge, inv_temp);
        if (y >= a.v0 + c0 && y < a.v0 + c0 + len) res[y - a.v0 - c0] += gr * inv_temp;
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          std::copy(res, res + len, orow + c0);
        } else {
          at::vec::convert(res, orow + c0, len);
        }
      }
    }
  });
}

}  // namespace

void lse_tile(const LseTileArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.x.scalar_type(), "alignkit_lse_tile", [&] {
    if (a.with_entropy) {
      lse_tile_impl<scalar_t, true>(a);
    } else {
      lse_tile_impl<scalar_t, false>(a);
    }
  });
}

void grad_tile(const GradTileArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.x.scalar_type(), "alignkit_grad_tile",
                                  [&] { grad_tile_impl<scalar_t>(a); });
}

int64_t first_bad_label(const at::Tensor& labels, int64_t V, int64_t ignore_index) {
  const int64_t* p = labels.const_data_ptr<int64_t>();
  const int64_t N = labels.numel();
  std::atomic<int64_t> bad{N};
  at::parallel_for(0, N, 1 << 14, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (p[r] != ignore_index && (p[r] < 0 || p[r] >= V)) {
        int64_t cur = bad.load();
        while (r < cur && !bad.compare_exchange_weak(cur, r)) {
        }
        return;
      }
    }
  });
  return bad.load() == N ? -1 : bad.load();
}

}  // namespace alignkit::cpu::CPU_CAPABILITY
