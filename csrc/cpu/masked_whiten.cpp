// CPU masked_whiten kernels over a flat tensor of N elements: forward reduces fixed chunks to
// Moments (alignkit/math.h) and merges them in chunk order (reduce_chunks), then writes y;
// backward does the same with the two sums of its gradient. Every pass runs over the same fixed
// chunks (lanes.h), so no bit of a result depends on the number of threads. Float runs 8 lanes at
// a time through Lanes.
#include <ATen/Dispatch.h>

#include <array>

#include "alignkit/ops.h"
#include "lanes.h"

namespace alignkit::cpu::CPU_CAPABILITY {

namespace {
constexpr int64_t kChunk = 1 << 14;  // elements per reduction chunk (64 KB of float: stays in L2)

// Moments of the valid x in [i0, i1): count and mean first, then the squared deviations from
// that mean on the second (cached) pass.
template <typename scalar_t>
Moments<at::opmath_type<scalar_t>> chunk_moments(const scalar_t* x, const uint8_t* m, int64_t i0, int64_t i1) {
  using L = Lanes<scalar_t>;
  using T = typename L::T;
  using O = Ops<T>;
  using acc_t = at::opmath_type<scalar_t>;
  const T zero(0), one(1);
  T cnt = zero, sum = zero;
  for_steps<L>(i0, i1, [&](int64_t i, int64_t w) {
    const auto valid = L::valid(m + i, w);
    cnt = cnt + O::select(valid, one, zero);
    sum = sum + O::select(valid, L::load(x + i, w), zero);
  });
  const acc_t n = L::sum(cnt);
  if (n == acc_t(0)) return {0, 0, 0};
  const acc_t mean = L::sum(sum) / n;
  const T mu(mean);
  T m2 = zero;
  for_steps<L>(i0, i1, [&](int64_t i, int64_t w) {
    const T d = O::select(L::valid(m + i, w), L::load(x + i, w) - mu, zero);
    m2 = m2 + d * d;
  });
  return {n, mean, L::sum(m2)};
}
}  // namespace

void whiten_fwd(const at::Tensor& x, const at::Tensor& mask, at::Tensor& y, at::Tensor& stats) {
  const int64_t N = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "alignkit_whiten_fwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    using O = Ops<T>;
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const uint8_t* m = mask.const_data_ptr<uint8_t>();
    const Moments<acc_t> all = reduce_chunks(
        N, kChunk, Moments<acc_t>{0, 0, 0}, [&](int64_t i0, int64_t i1) { return chunk_moments(xp, m, i0, i1); },
        moments_merge<acc_t>);
    const acc_t rstd = whiten_rstd(all);
    acc_t* st = stats.mutable_data_ptr<acc_t>();
    st[0] = all.mean, st[1] = rstd, st[2] = all.n;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const T mu(all.mean), r(rstd), zero(0);
    parallel_chunks(N, kChunk, [&](int64_t i0, int64_t i1) {
      for_steps<L>(i0, i1, [&](int64_t i, int64_t w) {
        L::store(O::select(L::valid(m + i, w), (L::load(xp + i, w) - mu) * r, zero), yp + i, w);
      });
    });
  });
}

void whiten_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask, const at::Tensor& stats,
                at::Tensor& dx) {
  const int64_t N = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "alignkit_whiten_bwd", [&] {
    using L = Lanes<scalar_t>;
    using T = typename L::T;
    using O = Ops<T>;
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    const uint8_t* m = mask.const_data_ptr<uint8_t>();
    const acc_t* st = stats.const_data_ptr<acc_t>();  // (mean, rstd, n)
    const T mu(st[0]), zero(0);
    using Sums = std::array<acc_t, 2>;  // Σ m·g, Σ m·g·(x - μ)
    const Sums sums = reduce_chunks(
        N, kChunk, Sums{0, 0},
        [&](int64_t i0, int64_t i1) {
          T sg = zero, sgx = zero;
          for_steps<L>(i0, i1, [&](int64_t i, int64_t w) {
            const auto valid = L::valid(m + i, w);
            const T g = O::select(valid, L::load(gp + i, w), zero);
            sg = sg + g;
            sgx = sgx + g * O::select(valid, L::load(xp + i, w) - mu, zero);
          });
          return Sums{L::sum(sg), L::sum(sgx)};
        },
        [](const Sums& a, const Sums& b) { return Sums{a[0] + b[0], a[1] + b[1]}; });
    const WhitenGrad<acc_t> k = whiten_grad_coefs(st[2], st[1], sums[0], sums[1]);
    const T r(st[1]), mean_g(k.mean_g), kk(k.k);
    scalar_t* out = dx.mutable_data_ptr<scalar_t>();
    parallel_chunks(N, kChunk, [&](int64_t i0, int64_t i1) {
      for_steps<L>(i0, i1, [&](int64_t i, int64_t w) {
        const T d = r * (L::load(gp + i, w) - mean_g) - (L::load(xp + i, w) - mu) * kk;
        L::store(O::select(L::valid(m + i, w), d, zero), out + i, w);
      });
    });
  });
}

}  // namespace alignkit::cpu::CPU_CAPABILITY
