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
#include <memory>

namespace alignkit::cpu {

// False when the kernel is not compiled in (no AVX2/FMA at build time): the caller uses at::mm.
bool sgemm_available();

void sgemm(int64_t M, int64_t N, int64_t K,
           const float* A, int64_t rs_a, int64_t cs_a,
           const float* B, int64_t rs_b, int64_t cs_b,
           float beta, float* C, int64_t ldc);

// An operand packed once, in the layout sgemm packs its blocks into, for several GEMMs that share
// it: those then read their blocks in place instead of packing them each time. The fused op packs
// `hidden` once per call, as A of every logits GEMM and as B of every d weight GEMM (at N = 4096,
// H = 576 that saves re-packing 2.4M floats twice per vocabulary tile). Copies share the buffer.
class Packed {
 public:
  int64_t rows() const { return rows_; }  // of the matrix it packs
  int64_t cols() const { return cols_; }
  const float* data() const { return data_.get(); }

 protected:
  Packed(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {}
  int64_t rows_, cols_;
  std::shared_ptr<const float> data_;
};

struct PackedA : Packed {  // A [M, K] (element strides rs, cs), in 6-row panels over all of K
  PackedA(int64_t M, int64_t K, const float* A, int64_t rs, int64_t cs);
};

struct PackedB : Packed {  // B [K, N] (element strides rs, cs), in 16-column panels over all of K
  PackedB(int64_t K, int64_t N, const float* B, int64_t rs, int64_t cs);
};

// The same product with a pre-packed A or B (shapes must match M, K or K, N).
void sgemm(int64_t M, int64_t N, int64_t K, const PackedA& A, const float* B, int64_t rs_b, int64_t cs_b,
           float beta, float* C, int64_t ldc);
void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const PackedB& B,
           float beta, float* C, int64_t ldc);

}  // namespace alignkit::cpu
