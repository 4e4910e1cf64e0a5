// Lanes<scalar_t>: how the CPU loss kernels step through a tensor. float runs the lanes of one
// at::vec::Vectorized<float> per step (8 in the DEFAULT and AVX2 builds, 16 in the AVX512 one),
// every other dtype one element per step in its opmath type;
// the kernels are written once over Lanes and call the formulas of alignkit/math.h, which
// Ops<Vectorized<float>> below makes work on vectors. Tails are partial vector steps (masked
// loads and stores), so every element takes the same arithmetic.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "alignkit/math.h"

namespace alignkit {

template <>
struct Ops<at::vec::Vectorized<float>> {
  using V = at::vec::Vectorized<float>;
  // ATen's polynomial exp (the one its CPU softmax uses): within 20 ulp, ~4x faster than Sleef's here.
  static V exp(const V& x) { return x.exp_u20(); }
  // log(1 + x) for x in [0, 1] as x·q(x), q a degree-9 polynomial (Chebyshev fit of log1p(x)/x on
  // [0, 1]): relative error < 2.5e-7 in float, no division; ~8x faster than Sleef's general log1p.
  static V log1p_unit(const V& x) {
    static constexpr float q[] = {-0.00321398f, 0.01964888f, -0.05643446f, 0.10533166f, -0.1525141f,
                                  0.19651475f,  -0.24947805f, 0.33329099f, -0.49999851f, 0.99999999f};
    V p(q[0]);
    for (int k = 1; k < 10; ++k) p = at::vec::fmadd(p, x, V(q[k]));
    return p * x;
  }
  static V select(const V& mask, const V& a, const V& b) { return V::blendv(b, a, mask); }
};

namespace cpu::CPU_CAPABILITY {

template <typename scalar_t>
struct Lanes {  // one element per step
  using T = at::opmath_type<scalar_t>;
  static constexpr int64_t W = 1;
  static T load(const scalar_t* p, int64_t) { return T(*p); }
  static void store(const T& v, scalar_t* p, int64_t) { *p = scalar_t(v); }
  static bool valid(const uint8_t* m, int64_t) { return *m != 0; }
  static T sum(const T& v) { return v; }
};

template <>
struct Lanes<float> {  // W lanes per step; n < W only on a row's last step
  using T = at::vec::Vectorized<float>;
  static constexpr int64_t W = T::size();
  static T load(const float* p, int64_t n) { return n == W ? T::loadu(p) : T::loadu(p, n); }
  static void store(const T& v, float* p, int64_t n) { n == W ? v.store(p) : v.store(p, n); }
  // lane mask of m[0..n) != 0; lanes past n are invalid
  static T valid(const uint8_t* m, int64_t n) {
#if defined(CPU_CAPABILITY_AVX2)
    // 8 mask bytes → 8 int32 lanes → all-ones where nonzero (a float-array round trip costs a
    // store-forwarding stall per step: 3x slower whitening)
    uint64_t bytes = 0;
    if (n == W) {
      std::memcpy(&bytes, m, W);  // one 8-byte load
    } else {
      std::memcpy(&bytes, m, static_cast<size_t>(n));
    }
    const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(bytes)));
    const __m256i is_zero = _mm256_cmpeq_epi32(wide, _mm256_setzero_si256());
    return T(_mm256_castsi256_ps(_mm256_xor_si256(is_zero, _mm256_set1_epi32(-1))));
#elif defined(CPU_CAPABILITY_AVX512)
    // 16 mask bytes → 16 int32 lanes → a lane mask → all-ones lanes where nonzero
    __m128i bytes = _mm_setzero_si128();
    if (n == W) {
      bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(m));
    } else {
      std::memcpy(&bytes, m, static_cast<size_t>(n));
    }
    const __m512i wide = _mm512_cvtepu8_epi32(bytes);
    return T(_mm512_castsi512_ps(_mm512_movm_epi32(_mm512_test_epi32_mask(wide, wide))));
#else
    alignas(32) float f[W] = {};
    for (int64_t k = 0; k < n; ++k) f[k] = m[k] ? 1.f : 0.f;
    return T::loadu(f) != T(0.f);
#endif
  }
  // horizontal sum in a fixed lane order (results do not depend on threads or runs)
  static float sum(const T& v) {
    alignas(32) float f[W];
    v.store(f);
    float s = 0.f;
    for (int64_t k = 0; k < W; ++k) s += f[k];
    return s;
  }
};

// body(i0, i1) for the fixed chunks [c·chunk, min(N, (c+1)·chunk)) of [0, N), chunks in parallel.
// The chunk (so vector-step) boundaries do not depend on the thread count, so neither do the bits of
// elementwise results: a partial step can round differently from a full one where the compiler
// contracted a·b + c into an FMA in one code path and not in the other.
template <typename F>
inline void parallel_chunks(int64_t N, int64_t chunk, F&& body) {
  at::parallel_for(0, (N + chunk - 1) / chunk, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(c * chunk, std::min(N, (c + 1) * chunk));
  });
}

// Reduces each fixed chunk of [0, N) to an R (chunk_fn(i0, i1), chunks in parallel), then folds
// them into `init` in chunk order with merge(acc, r): the same bits on any thread count.
template <typename R, typename ChunkFn, typename Merge>
inline R reduce_chunks(int64_t N, int64_t chunk, R init, ChunkFn&& chunk_fn, Merge&& merge) {
  std::vector<R> part((N + chunk - 1) / chunk);  // [chunks]
  parallel_chunks(N, chunk, [&](int64_t i0, int64_t i1) { part[i0 / chunk] = chunk_fn(i0, i1); });
  for (const R& r : part) init = merge(init, r);
  return init;
}

// body(i, n) for the steps of [i0, i1): n = elements in this step.
template <typename L, typename F>
inline void for_steps(int64_t i0, int64_t i1, F&& body) {
  for (int64_t i = i0; i < i1; i += L::W) body(i, std::min<int64_t>(L::W, i1 - i));
}

}  // namespace cpu::CPU_CAPABILITY
}  // namespace alignkit
