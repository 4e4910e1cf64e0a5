// A cache-blocked fp32 GEMM for the CPU tiles of fused_linear_logprobs.
//
// C[M, N] = beta * C + A[M, K] @ B[K, N], with A and B given by element strides (so transposed
// operands cost nothing) and C row-major with leading dimension ldc. beta is 0 (C is written
// without being read, so it may hold garbage) or 1 (accumulate).
//
// Why not at::mm: on the AVX2 dev box MKL's sgemm reaches ~105 GFLOP/s of the two cores' 173
// (measured with an FMA loop), and fused_linear_logprobs spends nearly all its time in four such
// GEMMs per vocabulary tile. The BLIS-style kernel here (6x16 register tile, packed panels,
// KC/MC/NC cache blocking, rows of C split over threads) is what lets the fused op beat eager
// PyTorch, which needs only three GEMMs but materialises [N, V] logits.
#pragma once

#include <cstdint>

namespace alignkit::cpu {

// False when the kernel is not compiled in (no AVX2/FMA at build time): the caller uses at::mm.
bool sgemm_available();

void sgemm(int64_t M, int64_t N, int64_t K,
           const float* A, int64_t rs_a, int64_t cs_a,
           const float* B, int64_t rs_b, int64_t cs_b,
           float beta, float* C, int64_t ldc);

}  // namespace alignkit::cpu
