// ATen-facing side of the CUDA kernels: dtype dispatch, current stream, tensors → raw pointers.
// Compiled by the host compiler (only in CUDA builds); the kernels live in csrc/cuda/*.cu.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/neg.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "alignkit/cuda_launch.h"
#include "alignkit/ops.h"

namespace alignkit::cuda {

namespace L = alignkit::cuda_launch;

namespace {
template <typename T>
const T* cptr(const at::Tensor* t) {
  return t && t->defined() && t->numel() ? t->const_data_ptr<T>() : nullptr;
}
template <typename scalar_t, typename Args>
L::TileRows<scalar_t> tile_rows(const Args& a) {
  return {a.x.template const_data_ptr<scalar_t>(), a.layout.stride, a.layout.offsets, a.labels.numel(),
          a.x.size(-1), a.v0, a.ignore_index, a.labels.template const_data_ptr<int64_t>(),
          L::acc_t<scalar_t>(a.inv_temp)};
}
cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
}  // namespace

#define AK_CUDA_DISPATCH(t, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, (t).scalar_type(), name, __VA_ARGS__)

void lse_tile(const LseTileArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  AK_CUDA_DISPATCH(a.x, "alignkit_lse_tile_cuda", [&] {
    using acc = L::acc_t<scalar_t>;
    auto p = [](at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<acc>() : nullptr; };
    L::LseTile<scalar_t> k{tile_rows<scalar_t>(a), a.with_entropy,
                           a.first, a.last, p(a.m), p(a.s), p(a.t), p(a.zy), p(a.logp), p(a.lse),
                           p(a.entropy)};
    L::lse_tile(k, stream_of(a.x));
  });
}

void grad_tile(const GradTileArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  AK_CUDA_DISPATCH(a.x, "alignkit_grad_tile_cuda", [&] {
    using acc = L::acc_t<scalar_t>;
    L::GradTile<scalar_t> k{tile_rows<scalar_t>(a), a.lse.const_data_ptr<acc>(), a.entropy.const_data_ptr<acc>(),
                            a.g.const_data_ptr<acc>(), cptr<acc>(a.g_ent),
                            a.out.mutable_data_ptr<scalar_t>(), a.out.stride(0)};
    L::grad_tile(k, stream_of(a.x));
  });
}

void dpo_fwd(const DpoArgs& a, at::Tensor& losses, at::Tensor& chosen_rewards,
             at::Tensor& rejected_rewards, at::Tensor& dloss_dh) {
  const c10::cuda::CUDAGuard guard(a.pc.device());
  AK_CUDA_DISPATCH(a.pc, "alignkit_dpo_fwd_cuda", [&] {
    L::dpo_fwd(a.pc.const_data_ptr<scalar_t>(), a.pr.const_data_ptr<scalar_t>(),
               a.rc.const_data_ptr<scalar_t>(), a.rr.const_data_ptr<scalar_t>(), a.pc.numel(), a.beta,
               a.type, a.label_smoothing, losses.mutable_data_ptr<scalar_t>(),
               chosen_rewards.mutable_data_ptr<scalar_t>(), rejected_rewards.mutable_data_ptr<scalar_t>(),
               dloss_dh.mutable_data_ptr<scalar_t>(), stream_of(a.pc));
  });
}

// Two elementwise ATen ops: on a GPU they are launch-bound either way.
void dpo_bwd(const at::Tensor& grad_losses, const at::Tensor& dloss_dh, at::Tensor& grad_pos,
             at::Tensor& grad_neg) {
  at::mul_out(grad_pos, grad_losses, dloss_dh);
  at::neg_out(grad_neg, grad_pos);
}

void ppo_rows(const PpoArgs& a, at::Tensor& row_sums) {
  const c10::cuda::CUDAGuard guard(a.logp.device());
  AK_CUDA_DISPATCH(a.logp, "alignkit_ppo_fwd_cuda", [&] {
    L::ppo_rows(a.logp.const_data_ptr<scalar_t>(), a.old_logp.const_data_ptr<scalar_t>(),
                a.adv.const_data_ptr<scalar_t>(), a.mask.const_data_ptr<uint8_t>(),
                cptr<scalar_t>(a.ref_logp), cptr<scalar_t>(a.entropy), a.logp.size(0), a.logp.size(1),
                a.p, row_sums.mutable_data_ptr<L::acc_t<scalar_t>>(), stream_of(a.logp));
  });
}

void ppo_bwd(const PpoArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,
             at::Tensor& grad_logp, at::Tensor& grad_entropy) {
  const c10::cuda::CUDAGuard guard(a.logp.device());
  AK_CUDA_DISPATCH(a.logp, "alignkit_ppo_bwd_cuda", [&] {
    using acc = L::acc_t<scalar_t>;
    L::ppo_bwd(a.logp.const_data_ptr<scalar_t>(), a.old_logp.const_data_ptr<scalar_t>(),
               a.adv.const_data_ptr<scalar_t>(), a.mask.const_data_ptr<uint8_t>(),
               cptr<scalar_t>(a.ref_logp), a.logp.size(0), a.logp.size(1), a.p, agg,
               grad_loss.const_data_ptr<acc>(), counts.const_data_ptr<acc>(),
               grad_logp.mutable_data_ptr<scalar_t>(),
               grad_entropy.numel() ? grad_entropy.mutable_data_ptr<scalar_t>() : nullptr,
               stream_of(a.logp));
  });
}

void value_rows(const ValueArgs& a, at::Tensor& row_sums) {
  const c10::cuda::CUDAGuard guard(a.values.device());
  AK_CUDA_DISPATCH(a.values, "alignkit_value_fwd_cuda", [&] {
    L::value_rows(a.values.const_data_ptr<scalar_t>(), a.old_values.const_data_ptr<scalar_t>(),
                  a.returns.const_data_ptr<scalar_t>(), a.mask.const_data_ptr<uint8_t>(),
                  a.values.size(0), a.values.size(1), a.clip_eps,
                  row_sums.mutable_data_ptr<L::acc_t<scalar_t>>(), stream_of(a.values));
  });
}

void value_bwd(const ValueArgs& a, Agg agg, const at::Tensor& grad_loss, const at::Tensor& counts,
               at::Tensor& grad_values) {
  const c10::cuda::CUDAGuard guard(a.values.device());
  AK_CUDA_DISPATCH(a.values, "alignkit_value_bwd_cuda", [&] {
    using acc = L::acc_t<scalar_t>;
    L::value_bwd(a.values.const_data_ptr<scalar_t>(), a.old_values.const_data_ptr<scalar_t>(),
                 a.returns.const_data_ptr<scalar_t>(), a.mask.const_data_ptr<uint8_t>(),
                 a.values.size(0), a.values.size(1), a.clip_eps, agg, grad_loss.const_data_ptr<acc>(),
                 counts.const_data_ptr<acc>(), grad_values.mutable_data_ptr<scalar_t>(),
                 stream_of(a.values));
  });
}

void gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma,
         double lam, at::Tensor& advantages, at::Tensor& returns) {
  const c10::cuda::CUDAGuard guard(rewards.device());
  AK_CUDA_DISPATCH(rewards, "alignkit_gae_cuda", [&] {
    L::gae(rewards.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(),
           mask.const_data_ptr<uint8_t>(), rewards.size(0), rewards.size(1), gamma, lam,
           advantages.mutable_data_ptr<scalar_t>(), returns.mutable_data_ptr<scalar_t>(),
           stream_of(rewards));
  });
}

void whiten_fwd(const at::Tensor& x, const at::Tensor& mask, at::Tensor& y, at::Tensor& stats) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor work = at::empty({L::whiten_work_size(x.numel())}, stats.options());
  AK_CUDA_DISPATCH(x, "alignkit_whiten_fwd_cuda", [&] {
    using acc = L::acc_t<scalar_t>;
    L::whiten_fwd(x.const_data_ptr<scalar_t>(), mask.const_data_ptr<uint8_t>(), x.numel(),
                  work.mutable_data_ptr<acc>(), stats.mutable_data_ptr<acc>(), y.mutable_data_ptr<scalar_t>(),
                  stream_of(x));
  });
}

void whiten_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask, const at::Tensor& stats,
                at::Tensor& dx) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor work = at::empty({L::whiten_work_size(x.numel())}, stats.options());
  AK_CUDA_DISPATCH(x, "alignkit_whiten_bwd_cuda", [&] {
    using acc = L::acc_t<scalar_t>;
    L::whiten_bwd(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), mask.const_data_ptr<uint8_t>(),
                  x.numel(), stats.const_data_ptr<acc>(), work.mutable_data_ptr<acc>(),
                  dx.mutable_data_ptr<scalar_t>(), stream_of(x));
  });
}

}  // namespace alignkit::cuda
