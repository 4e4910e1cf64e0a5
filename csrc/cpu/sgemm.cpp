// Cache-blocked fp32 GEMM (see sgemm.h). Loop nest after BLIS (Van Zee & van de Geijn 2015):
//
//   for jc over N in NC columns            B block [KC, NC] packed into 16-column panels (shared)
//     for pc over K in KC steps
//       for ic over M in MC rows  (threads)  A block [MC, KC] packed into 6-row panels (per thread)
//         for jr, ir: 6x16 micro-kernel     12 ymm accumulators, kc rank-1 updates
//
// Edge tiles are computed in full on zero-padded panels and written back clipped, so no read or
// write ever leaves A, B or C.
#include "alignkit/sgemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
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

// Ap[panel][k][0..MR) = A[i0 + panel*MR + r, p0 + k], zero past row mc.
void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* Ap) {
  for (int64_t i = 0; i < mc; i += MR) {
    const int64_t m = std::min(MR, mc - i);
    float* dst = Ap + i * kc;
    const float* src = A + i * rs;
    if (m == MR && cs == 1) {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < MR; ++r) dst[k * MR + r] = src[r * rs + k];
    } else if (m == MR && rs == 1) {  // A is a transposed view: the panel's column k is contiguous
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * MR, src + k * cs, MR * sizeof(float));
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < MR; ++r) dst[k * MR + r] = r < m ? src[r * rs + k * cs] : 0.f;
    }
  }
}

// Bp[panel][k][0..NR) = B[p0 + k, j0 + panel*NR + c], zero past column nc.
void pack_b_panel(int64_t n, int64_t kc, const float* B, int64_t rs, int64_t cs, float* dst) {
  if (n == NR && cs == 1) {
    for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, B + k * rs, NR * sizeof(float));
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

}  // namespace

bool sgemm_available() { return true; }

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,
           int64_t rs_b, int64_t cs_b, float beta, float* C, int64_t ldc) {
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
  Buffer Bp = alloc_floats(kc_blk * nc_blk);
  std::vector<Buffer> Aps;  // one packed-A block per thread, reused by every (jc, pc) step
  for (int64_t t = 0; t < threads; ++t) Aps.push_back(alloc_floats(ceil_div(mc_blk, MR) * MR * kc_blk));
  for (int64_t jc = 0; jc < N; jc += nc_blk) {
    const int64_t nc = std::min(nc_blk, N - jc);
    const int64_t n_panels = ceil_div(nc, NR);
    for (int64_t pc = 0; pc < K; pc += kc_blk) {
      const int64_t kc = std::min(kc_blk, K - pc);
      const float b_beta = (pc == 0) ? beta : 1.f;
      float* bp = Bp.get();
      at::parallel_for(0, n_panels, 1, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p)
          pack_b_panel(std::min(NR, nc - p * NR), kc, B + pc * rs_b + (jc + p * NR) * cs_b, rs_b, cs_b,
                       bp + p * NR * kc);
      });
      at::parallel_for(0, n_ic, 1, [&](int64_t b0, int64_t b1) {
        float* ap = Aps[std::min<int64_t>(at::get_thread_num(), threads - 1)].get();
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t ic = b * mc_blk, mc = std::min(mc_blk, M - ic);
          pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, ap);
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const float* bpan = bp + (jr / NR) * NR * kc;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              micro_kernel(kc, ap + ir * kc, bpan, b_beta, C + (ic + ir) * ldc + jc + jr, ldc,
                           std::min(MR, mc - ir), std::min(NR, nc - jr));
            }
          }
        }
      });
    }
  }
}

#else  // no AVX2/FMA at build time

bool sgemm_available() { return false; }

void sgemm(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float,
           float*, int64_t) {
  TORCH_CHECK(false, "alignkit: the blocked sgemm was not compiled in (no AVX2/FMA); use at::mm");
}

#endif

}  // namespace alignkit::cpu
