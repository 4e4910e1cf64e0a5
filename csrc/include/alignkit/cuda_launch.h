// Raw-pointer launchers of the CUDA kernels (csrc/cuda/*.cu). They take no ATen types, so the .cu
// translation units stay lean; csrc/cuda/dispatch.cpp turns tensors into these calls.
// Instantiated for scalar_t in {float, double, c10::Half, c10::BFloat16}; acc_t is double for
// double and float otherwise.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "alignkit/math.h"

namespace alignkit::cuda_launch {

template <typename scalar_t>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename scalar_t>
using acc_t = typename Acc<scalar_t>::type;

// One vocabulary tile [v0, v0 + n) of N rows (see LseTileArgs / GradTileArgs in ops.h). Row r of x
// starts at x + (offsets ? offsets[r] : r * stride).
template <typename scalar_t>
struct TileRows {
  const scalar_t* x;
  int64_t stride;
  const int64_t* offsets;
  int64_t N, n, v0, ignore_index;
  const int64_t* labels;
  acc_t<scalar_t> inv_temp;
};

template <typename scalar_t>
struct LseTile {
  TileRows<scalar_t> rows;
  bool with_entropy, first, last;
  acc_t<scalar_t>*m, *s, *t, *zy;    // running state [N] (unused when first && last, except zy)
  acc_t<scalar_t>*logp, *lse, *ent;  // outputs [N] when last
};
template <typename scalar_t>
void lse_tile(const LseTile<scalar_t>& a, cudaStream_t stream);

template <typename scalar_t>
struct GradTile {
  TileRows<scalar_t> rows;
  const acc_t<scalar_t>*lse, *ent, *g, *g_ent;  // g_ent may be null
  scalar_t* out;                                // [N, n], rows out_stride apart (may alias x)
  int64_t out_stride;
};
template <typename scalar_t>
void grad_tile(const GradTile<scalar_t>& a, cudaStream_t stream);

template <typename scalar_t>
void dpo_fwd(const scalar_t* pc, const scalar_t* pr, const scalar_t* rc, const scalar_t* rr, int64_t B,
             double beta, DpoLoss type, double eps, scalar_t* losses, scalar_t* chosen_rewards,
             scalar_t* rejected_rewards, scalar_t* dloss_dh, cudaStream_t stream);

// PPO/value: [B, T] contiguous; mask uint8; ref/ent may be null. row_sums as in ops.h.
template <typename scalar_t>
void ppo_rows(const scalar_t* logp, const scalar_t* old, const scalar_t* adv, const uint8_t* mask,
              const scalar_t* ref, const scalar_t* ent, int64_t B, int64_t T, PpoParams p,
              acc_t<scalar_t>* row_sums, cudaStream_t stream);
template <typename scalar_t>
void ppo_bwd(const scalar_t* logp, const scalar_t* old, const scalar_t* adv, const uint8_t* mask,
             const scalar_t* ref, int64_t B, int64_t T, PpoParams p, Agg agg,
             const acc_t<scalar_t>* grad_loss, const acc_t<scalar_t>* counts, scalar_t* grad_logp,
             scalar_t* grad_ent, cudaStream_t stream);
template <typename scalar_t>
void value_rows(const scalar_t* v, const scalar_t* v_old, const scalar_t* ret, const uint8_t* mask,
                int64_t B, int64_t T, double clip_eps, acc_t<scalar_t>* row_sums, cudaStream_t stream);
template <typename scalar_t>
void value_bwd(const scalar_t* v, const scalar_t* v_old, const scalar_t* ret, const uint8_t* mask,
               int64_t B, int64_t T, double clip_eps, Agg agg, const acc_t<scalar_t>* grad_loss,
               const acc_t<scalar_t>* counts, scalar_t* grad_v, cudaStream_t stream);

template <typename scalar_t>
void gae(const scalar_t* r, const scalar_t* v, const uint8_t* mask, int64_t B, int64_t T, double gamma,
         double lam, scalar_t* adv, scalar_t* ret, cudaStream_t stream);

// masked_whiten over a flat [N] tensor (ops.h). `work` holds whiten_work_size(N) acc_t values;
// stats [3] = (mean, rstd, n) is written (forward) and read (backward) on the device.
int64_t whiten_work_size(int64_t N);
template <typename scalar_t>
void whiten_fwd(const scalar_t* x, const uint8_t* mask, int64_t N, acc_t<scalar_t>* work,
                acc_t<scalar_t>* stats, scalar_t* y, cudaStream_t stream);
template <typename scalar_t>
void whiten_bwd(const scalar_t* g, const scalar_t* x, const uint8_t* mask, int64_t N,
                const acc_t<scalar_t>* stats, acc_t<scalar_t>* work, scalar_t* dx, cudaStream_t stream);

}  // namespace alignkit::cuda_launch
