// Cache-blocked fp32 GEMM (see sgemm.h). Loop nest after BLIS (Van Zee & van de Geijn 2015):
//
//   for jc over N in NC columns            B block [KC, NC] packed into 16-column panels (shared)
//     for pc over K in KC steps
//       for ic over M in MC rows  (threads)  A block [MC, KC] packed into 6-row panels (per thread)
//                                            blocks and B panels are claimed from shared counters
//         for jr, ir: 6x16 micro-kernel     12 ymm accumulators, kc rank-1 updates
//
// An operand that several GEMMs share can be packed once (PackedA, PackedB: the same panels, over
// all of K); sgemm then reads its blocks from there and skips that packing step.
//
// Edge tiles are computed in full on zero-padded panels and written back clipped, so no read or
// write ever leaves A, B or C.
#include "alignkit/sgemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ALIGNKIT_SGEMM_AVX2 1
#endif

namespace alignkit::cpu {

#ifdef ALIGNKIT_SGEMM_AVX2

namespace {

constexpr int64_t MR = 6, NR = 16;        // register tile: 6 rows x 2 ymm
constexpr int64_t KC_MAX = 256;            // A micro-panel 6 KB + B micro-panel 16 KB: L1
constexpr int64_t MC_MAX = 144;            // A block 144 x 256 x 4 B = 147 KB: L2 (512 KB)
constexpr int64_t NC_MAX = 4080;           // B block 256 x 4080 x 4 B = 4.2 MB: L3

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float, FreeDeleter>;

Buffer alloc_floats(int64_t n) {
  const size_t bytes = ((size_t(n) * sizeof(float)) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, std::max<size_t>(bytes, 64));
  TORCH_CHECK(p != nullptr, "alignkit: sgemm could not allocate ", bytes, " bytes of packing buffer");
  return Buffer(static_cast<float*>(p));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Even split of `len` into blocks of at most `max_block` (a multiple of `align`), the block count
// a multiple of `multiple` when there is enough work (so threads get equal shares).
int64_t block_size(int64_t len, int64_t max_block, int64_t align, int64_t multiple = 1) {
  int64_t nb = ceil_div(len, max_block);
  if (multiple > 1 && len >= multiple * align) nb = ceil_div(nb, multiple) * multiple;
  return std::min(max_block, ceil_div(ceil_div(len, nb), align) * align);
}

// dst[k * 6 + r] = src[r * rs + k] for r < 6, k < 8: the 8 x 8 transpose of (rows 0-5, two zero
// rows), whose 8 output rows are written 6 floats each.
inline void transpose_6x8(const float* src, int64_t rs, float* dst) {
  const __m256 z = _mm256_setzero_ps();
  const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + rs), r2 = _mm256_loadu_ps(src + 2 * rs),
               r3 = _mm256_loadu_ps(src + 3 * rs), r4 = _mm256_loadu_ps(src + 4 * rs),
               r5 = _mm256_loadu_ps(src + 5 * rs);
  // 2 x 2 blocks of pairs, then of quads, then the 128-bit halves
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, z, 0x44), u5 = _mm256_shuffle_ps(t4, z, 0xEE),
               u6 = _mm256_shuffle_ps(t5, z, 0x44), u7 = _mm256_shuffle_ps(t5, z, 0xEE);
  // column k of rows 0-3 is the low (k < 4) or high (k >= 4) half of u_{k%4}; rows 4-5 likewise in u_{4+k%4}
  const __m256 lo[4] = {u0, u1, u2, u3}, hi[4] = {u4, u5, u6, u7};
  for (int k = 0; k < 4; ++k) {
    const __m128 a = _mm256_castps256_ps128(lo[k]), b = _mm256_castps256_ps128(hi[k]);
    _mm_storeu_ps(dst + k * MR, a);                     // rows 0-3 of column k
    _mm_storel_pi(reinterpret_cast<__m64*>(dst + k * MR + 4), b);  // rows 4-5
    const __m128 a2 = _mm256_extractf128_ps(lo[k], 1), b2 = _mm256_extractf128_ps(hi[k], 1);
    _mm_storeu_ps(dst + (k + 4) * MR, a2);
    _mm_storel_pi(reinterpret_cast<__m64*>(dst + (k + 4) * MR + 4), b2);
  }
}

// dst[k * NR + c] = src[c * cs + k] for c, k < 8: an 8 x 8 transpose of 8 contiguous columns.
inline void transpose_8x8(const float* src, int64_t cs, float* dst) {
  __m256 r[8], t[8], u[8];
  for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(src + c * cs);
  for (int c = 0; c < 8; c += 2) {
    t[c] = _mm256_unpacklo_ps(r[c], r[c + 1]);
    t[c + 1] = _mm256_unpackhi_ps(r[c], r[c + 1]);
  }
  // u[4g + j]: element j and j + 4 of columns 4g..4g+3, in the low and high 128-bit halves
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(dst + k * NR, _mm256_permute2f128_ps(u[k], u[4 + k], 0x20));
    _mm256_storeu_ps(dst + (k + 4) * NR, _mm256_permute2f128_ps(u[k], u[4 + k], 0x31));
  }
}

// Ap[panel][k][0..MR) = A[i0 + panel*MR + r, p0 + k], zero past row mc.
void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* Ap) {
  const int64_t full = mc / MR * MR;  // rows in full panels
  if (rs == 1) {  // A is a transposed view: its column k is contiguous. Walk 8 columns at a time
                  // front to back, writing each panel's 8 x 6 floats before the next panel's: so the
                  // writes go to one panel at a time. Writing all panels at each k instead (24 streams
                  // 6 KB apart, in 2 of the L1's 64 sets) made d weight's GEMM 4% slower.
    for (int64_t k0 = 0; k0 < kc; k0 += 8) {
      const int64_t k1 = std::min<int64_t>(k0 + 8, kc);
      for (int64_t i = 0; i < full; i += MR)
        for (int64_t k = k0; k < k1; ++k) std::memcpy(Ap + i * kc + k * MR, A + k * cs + i, MR * sizeof(float));
    }
  } else if (cs == 1) {  // rows of A are contiguous: transpose 6 x 8 blocks in registers
    for (int64_t i = 0; i < full; i += MR) {
      const float* src = A + i * rs;
      float* dst = Ap + i * kc;
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) transpose_6x8(src + k, rs, dst + k * MR);
      for (; k < kc; ++k)
        for (int64_t r = 0; r < MR; ++r) dst[k * MR + r] = src[r * rs + k];
    }
  } else {
    for (int64_t i = 0; i < full; i += MR)
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < MR; ++r) Ap[i * kc + k * MR + r] = A[(i + r) * rs + k * cs];
  }
  if (full < mc) {  // the last, partial panel: zero rows past mc
    const int64_t m = mc - full;
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t r = 0; r < MR; ++r) Ap[full * kc + k * MR + r] = r < m ? A[(full + r) * rs + k * cs] : 0.f;
  }
}

// Bp[panel][k][0..NR) = B[p0 + k, j0 + panel*NR + c], zero past column nc.
void pack_b_panel(int64_t n, int64_t kc, const float* B, int64_t rs, int64_t cs, float* dst) {
  if (n == NR && cs == 1) {
    for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, B + k * rs, NR * sizeof(float));
    return;
  }
  if (rs == 1 && n == NR) {  // columns of B are contiguous: transpose 8 x 8 blocks in registers
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      transpose_8x8(B + k, cs, dst + k * NR);
      transpose_8x8(B + 8 * cs + k, cs, dst + k * NR + 8);
    }
    for (; k < kc; ++k)
      for (int64_t c = 0; c < NR; ++c) dst[k * NR + c] = B[c * cs + k];
    return;
  }
  if (rs == 1) {  // columns of B are contiguous: walk them
    for (int64_t c = 0; c < NR; ++c) {
      if (c < n) {
        const float* col = B + c * cs;
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = col[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = 0.f;
      }
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t c = 0; c < NR; ++c) dst[k * NR + c] = c < n ? B[k * rs + c * cs] : 0.f;
}

// acc[MR][NR] = Ap panel [kc, MR]^T @ Bp panel [kc, NR], then C (m x n, clipped) = beta*C + acc.
inline void micro_kernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float beta,
                         float* __restrict C, int64_t ldc, int64_t m, int64_t n) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(),
         c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(),
         c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps(),
         c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t r = 0; r < std::min(m, MR); ++r) {  // C rows are far apart: fetch them while we compute
    _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + NR - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(Ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(Ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(Ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(Ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(Ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(Ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    Ap += MR;
    Bp += NR;
  }
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (m == MR && n == NR) {
    for (int64_t r = 0; r < MR; ++r) {
      float* row = C + r * ldc;
      if (beta != 0.f) {
        _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[r][0]));
        _mm256_storeu_ps(row + 8, _mm256_add_ps(_mm256_loadu_ps(row + 8), acc[r][1]));
      } else {
        _mm256_storeu_ps(row, acc[r][0]);
        _mm256_storeu_ps(row + 8, acc[r][1]);
      }
    }
    return;
  }
  alignas(32) float tile[MR][NR];
  for (int64_t r = 0; r < MR; ++r) {
    _mm256_store_ps(tile[r], acc[r][0]);
    _mm256_store_ps(tile[r] + 8, acc[r][1]);
  }
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) C[r * ldc + c] = beta != 0.f ? C[r * ldc + c] + tile[r][c] : tile[r][c];
}

// Where sgemm gets an operand from: a strided matrix, packed block by block as it goes, or an
// operand packed once for all of K (PackedA, PackedB), whose blocks it then reads in place.
struct Source {
  const float* data;
  int64_t rs, cs;
  const float* packed;  // PackedA::data() or PackedB::data(), or null
};

void sgemm_impl(int64_t M, int64_t N, int64_t K, const Source& a, const Source& b, float beta, float* C,
                int64_t ldc) {
  TORCH_CHECK(beta == 0.f || beta == 1.f, "alignkit: sgemm supports beta 0 or 1, got ", beta);
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (beta == 0.f)
      for (int64_t i = 0; i < M; ++i) std::fill_n(C + i * ldc, N, 0.f);
    return;
  }
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t kc_blk = block_size(K, KC_MAX, 1);
  const int64_t nc_blk = block_size(N, NC_MAX, NR);
  const int64_t mc_blk = block_size(M, MC_MAX, MR, threads);  // row blocks: equal shares per thread
  const int64_t n_ic = ceil_div(M, mc_blk);
  Buffer Bp = b.packed ? Buffer() : alloc_floats(kc_blk * nc_blk);
  std::vector<Buffer> Aps;  // one packed-A block per thread, reused by every (jc, pc) step
  if (!a.packed)
    for (int64_t t = 0; t < threads; ++t) Aps.push_back(alloc_floats(ceil_div(mc_blk, MR) * MR * kc_blk));
  for (int64_t jc = 0; jc < N; jc += nc_blk) {
    const int64_t nc = std::min(nc_blk, N - jc);
    const int64_t n_panels = ceil_div(nc, NR);
    for (int64_t pc = 0; pc < K; pc += kc_blk) {
      const int64_t kc = std::min(kc_blk, K - pc);
      const float b_beta = (pc == 0) ? beta : 1.f;
      // B panel p of this block: packed here (NR * kc floats apart), or read from a PackedB, whose
      // panel of column j starts at j * K and holds all of K (row pc at offset pc * NR)
      const float* bp = b.packed ? b.packed + jc * K + pc * NR : Bp.get();
      const int64_t b_ps = b.packed ? NR * K : NR * kc;
      // Threads claim B panels and row blocks from shared counters instead of fixed shares, so one
      // slowed by the VM's neighbours does not leave the other waiting at the end of the region
      // (fwd+bwd at the bench shape: median paired difference -0.5%, 7 of 10 pairs faster).
      std::atomic<int64_t> next_panel{0}, next_block{0};
      if (!b.packed) {
        at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
          for (int64_t p; (p = next_panel.fetch_add(1, std::memory_order_relaxed)) < n_panels;)
            pack_b_panel(std::min(NR, nc - p * NR), kc, b.data + pc * b.rs + (jc + p * NR) * b.cs, b.rs, b.cs,
                         Bp.get() + p * b_ps);
        });
      }
      at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
        float* ap = a.packed ? nullptr : Aps[std::min<int64_t>(at::get_thread_num(), threads - 1)].get();
        for (int64_t blk; (blk = next_block.fetch_add(1, std::memory_order_relaxed)) < n_ic;) {
          const int64_t ic = blk * mc_blk, mc = std::min(mc_blk, M - ic);
          // A panel of rows [ic + ir, ic + ir + MR): packed here, or read from a PackedA (as for B)
          const float* ablk = ap;
          const int64_t a_ps = a.packed ? MR * K : MR * kc;
          if (a.packed) {
            ablk = a.packed + ic * K + pc * MR;
          } else {
            pack_a(mc, kc, a.data + ic * a.rs + pc * a.cs, a.rs, a.cs, ap);
          }
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const float* bpan = bp + (jr / NR) * b_ps;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              micro_kernel(kc, ablk + (ir / MR) * a_ps, bpan, b_beta, C + (ic + ir) * ldc + jc + jr, ldc,
                           std::min(MR, mc - ir), std::min(NR, nc - jr));
            }
          }
        }
      });
    }
  }
}

}  // namespace

bool sgemm_available() { return true; }

PackedA::PackedA(int64_t M, int64_t K, const float* A, int64_t rs, int64_t cs) : Packed(M, K) {
  const int64_t panels = ceil_div(M, MR);
  Buffer buf = alloc_floats(panels * MR * std::max<int64_t>(K, 1));
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {  // each panel: all of K
    pack_a(std::min(M, p1 * MR) - p0 * MR, K, A + p0 * MR * rs, rs, cs, buf.get() + p0 * MR * K);
  });
  data_ = std::move(buf);  // shared_ptr takes the buffer with its deleter (std::free)
}

PackedB::PackedB(int64_t K, int64_t N, const float* B, int64_t rs, int64_t cs) : Packed(K, N) {
  const int64_t panels = ceil_div(N, NR);
  Buffer buf = alloc_floats(panels * NR * std::max<int64_t>(K, 1));
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      pack_b_panel(std::min(NR, N - p * NR), K, B + p * NR * cs, rs, cs, buf.get() + p * NR * K);
  });
  data_ = std::move(buf);  // shared_ptr takes the buffer with its deleter (std::free)
}

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,
           int64_t rs_b, int64_t cs_b, float beta, float* C, int64_t ldc) {
  sgemm_impl(M, N, K, {A, rs_a, cs_a, nullptr}, {B, rs_b, cs_b, nullptr}, beta, C, ldc);
}

void sgemm(int64_t M, int64_t N, int64_t K, const PackedA& A, const float* B, int64_t rs_b, int64_t cs_b,
           float beta, float* C, int64_t ldc) {
  TORCH_CHECK(A.rows() == M && A.cols() == K, "alignkit: sgemm got a PackedA of shape [", A.rows(), ", ",
              A.cols(), "] for A [", M, ", ", K, "]");
  sgemm_impl(M, N, K, {nullptr, 0, 0, A.data()}, {B, rs_b, cs_b, nullptr}, beta, C, ldc);
}

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const PackedB& B,
           float beta, float* C, int64_t ldc) {
  TORCH_CHECK(B.rows() == K && B.cols() == N, "alignkit: sgemm got a PackedB of shape [", B.rows(), ", ",
              B.cols(), "] for B [", K, ", ", N, "]");
  sgemm_impl(M, N, K, {A, rs_a, cs_a, nullptr}, {nullptr, 0, 0, B.data()}, beta, C, ldc);
}

#else  // no AVX2/FMA at build time

bool sgemm_available() { return false; }

namespace {
[[noreturn]] void unavailable() {
  TORCH_CHECK(false, "alignkit: the blocked sgemm was not compiled in (no AVX2/FMA); use at::mm");
}
}  // namespace

PackedA::PackedA(int64_t M, int64_t K, const float*, int64_t, int64_t) : Packed(M, K) { unavailable(); }
PackedB::PackedB(int64_t K, int64_t N, const float*, int64_t, int64_t) : Packed(K, N) { unavailable(); }
void sgemm(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float,
           float*, int64_t) {
  unavailable();
}
void sgemm(int64_t, int64_t, int64_t, const PackedA&, const float*, int64_t, int64_t, float, float*, int64_t) {
  unavailable();
}
void sgemm(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const PackedB&, float, float*, int64_t) {
  unavailable();
}

#endif

}  // namespace alignkit::cpu
