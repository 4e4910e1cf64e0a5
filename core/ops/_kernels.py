"""The compiled kernels (``torch.ops.alignkit``): fake kernels, autograd formulas and typed wrappers.

Importing this module loads ``alignkit._C`` (raising ImportError when it is not built). The C++ side
(csrc/bindings.cpp) declares each op as a ``*_fwd`` that also returns the row statistics its
``*_bwd`` needs; here each pair becomes one differentiable function with the public signature of
:mod:`alignkit.ops`. Fake kernels give output shapes to ``torch.compile`` without running anything.
"""
from __future__ import annotations

import os

import torch

from alignkit import _C  # noqa: F401  (loads the library: runs the TORCH_LIBRARY registrations)

_ops = torch.ops.alignkit


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# Fake (meta) kernels: shapes and dtypes only
# ----------------------------------------------------------------------------------------------
@torch.library.register_fake("alignkit::logprobs_fwd")
def _(logits, labels, ignore_index, temperature, with_entropy):
    acc = _acc(logits.dtype)
    return tuple(logits.new_empty(labels.shape, dtype=acc) for _ in range(3))


@torch.library.register_fake("alignkit::logprobs_bwd")
def _(grad_logp, grad_entropy, logits, labels, lse, entropy, ignore_index, temperature):
    return logits.new_empty(logits.shape)


@torch.library.register_fake("alignkit::fused_linear_logprobs_fwd")
def _(hidden, weight, bias, labels, ignore_index, temperature, with_entropy, cache_cols):
    acc = _acc(hidden.dtype)
    compute = hidden.dtype if hidden.is_cuda else acc  # the GEMMs' dtype (kept logits)
    return (*(hidden.new_empty(labels.shape, dtype=acc) for _ in range(3)),
            hidden.new_empty((hidden.shape[0], cache_cols), dtype=compute))


@torch.library.register_fake("alignkit::fused_linear_logprobs_bwd")
def _(grad_logp, grad_entropy, hidden, weight, bias, labels, lse, entropy, cache, ignore_index, temperature,
      needs_hidden, needs_weight, needs_bias):
    return (hidden.new_empty(hidden.shape if needs_hidden else (0,)),
            weight.new_empty(weight.shape if needs_weight else (0,)),
            hidden.new_empty(bias.shape if (needs_bias and bias is not None) else (0,)))


@torch.library.register_fake("alignkit::dpo_loss_fwd")
def _(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type, label_smoothing):
    return tuple(torch.empty_like(policy_chosen) for _ in range(4))


@torch.library.register_fake("alignkit::dpo_loss_bwd")
def _(grad_losses, dloss_dh):
    return torch.empty_like(dloss_dh), torch.empty_like(dloss_dh)


@torch.library.register_fake("alignkit::ppo_loss_fwd")
def _(logprobs, *args):
    return logprobs.new_empty(()), logprobs.new_empty((4,))


@torch.library.register_fake("alignkit::ppo_loss_bwd")
def _(grad_loss, logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy, *args):
    return (torch.empty_like(logprobs),
            torch.empty_like(logprobs) if entropy is not None else logprobs.new_empty((0,)))


@torch.library.register_fake("alignkit::value_loss_fwd")
def _(values, *args):
    return values.new_empty(()), values.new_empty(())


@torch.library.register_fake("alignkit::value_loss_bwd")
def _(grad_loss, values, *args):
    return torch.empty_like(values)


@torch.library.register_fake("alignkit::gae")
def _(rewards, values, mask, gamma, lam):
    return torch.empty_like(rewards), torch.empty_like(rewards)


@torch.library.register_fake("alignkit::masked_whiten_fwd")
def _(x, mask):
    return torch.empty_like(x), x.new_empty((3,), dtype=_acc(x.dtype))


@torch.library.register_fake("alignkit::masked_whiten_bwd")
def _(grad, x, mask, stats):
    return torch.empty_like(x)


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------
def _setup_logprobs(ctx, inputs, output):
    logits, labels, ctx.ignore_index, ctx.temperature, ctx.with_entropy = inputs
    _, lse, ent = output
    ctx.save_for_backward(logits, labels, lse, ent)  # logits is the input itself: no copy


def _backward_logprobs(ctx, g_logp, g_lse, g_ent):
    logits, labels, lse, ent = ctx.saved_tensors
    grad = _ops.logprobs_bwd(g_logp, g_ent if ctx.with_entropy else None, logits, labels, lse, ent,
                             ctx.ignore_index, ctx.temperature)
    return grad, None, None, None, None


torch.library.register_autograd("alignkit::logprobs_fwd", _backward_logprobs,
                                setup_context=_setup_logprobs)


def _setup_fused(ctx, inputs, output):
    hidden, weight, bias, labels, ctx.ignore_index, ctx.temperature, ctx.with_entropy, _ = inputs
    _, lse, ent, cache = output
    ctx.has_bias = bias is not None
    # no zero-filled gradients for the outputs nobody differentiates (lse, and the kept logits,
    # which would cost another [N, cache_cols] buffer)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(hidden, weight, bias, labels, lse, ent, cache)


def _backward_fused(ctx, g_logp, g_lse, g_ent, g_cache):
    hidden, weight, bias, labels, lse, ent, cache = ctx.saved_tensors
    need_h, need_w, need_b = ctx.needs_input_grad[:3]
    g_ent = g_ent if ctx.with_entropy else None
    if g_logp is None and g_ent is None:
        return (None,) * 8
    if g_logp is None:
        g_logp = torch.zeros_like(lse)
    gh, gw, gb = _ops.fused_linear_logprobs_bwd(
        g_logp, g_ent, hidden, weight, bias, labels, lse, ent, cache,
        ctx.ignore_index, ctx.temperature, need_h, need_w, need_b and ctx.has_bias)
    return (gh if need_h else None, gw if need_w else None,
            gb if (need_b and ctx.has_bias) else None, None, None, None, None, None)


torch.library.register_autograd("alignkit::fused_linear_logprobs_fwd", _backward_fused,
                                setup_context=_setup_fused)


# dpo_loss_fwd, ppo_loss_fwd, value_loss_fwd and masked_whiten_fwd: autograd in C++
# (csrc/autograd.cpp), as this wrapper's cost per call would exceed their kernels'.


# ----------------------------------------------------------------------------------------------
# Public signatures (documented in alignkit.ops)
# ----------------------------------------------------------------------------------------------
def logprobs(logits, labels, *, ignore_index=-100, temperature=1.0, return_entropy=False):
    logp, _, ent = _ops.logprobs_fwd(logits, labels, ignore_index, float(temperature), return_entropy)
    return (logp, ent) if return_entropy else logp


#: Bytes of logits the fused op may keep from forward for backward on CPU (each kept tile saves one of
#: four GEMMs); 0 on CUDA, where GEMMs are cheap and memory is not. ALIGNKIT_FUSED_CACHE_BYTES overrides.
#: The kept logits live until backward is done, beside the tile buffer (32 MB) and the gradients, so
#: the op's peak is about this budget plus those (N=4096, H=576, V=49152, fp32: 287 MB at 128 MB,
#: 12% of eager's; at 256 MB it would be 415 MB, over the 15% target).
FUSED_CACHE_BYTES_CPU = 128 << 20


def fused_cache_cols(hidden, weight, bias=None) -> int:
    """Vocabulary columns whose logits ``fused_linear_logprobs`` keeps for backward: as many as
    the byte budget allows, 0 when no gradient will be taken."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
        return 0
    env = os.environ.get("ALIGNKIT_FUSED_CACHE_BYTES")
    budget = int(env) if env else (0 if hidden.is_cuda else FUSED_CACHE_BYTES_CPU)
    elem = hidden.element_size() if hidden.is_cuda else _acc(hidden.dtype).itemsize
    return max(0, min(weight.shape[0], budget // max(1, hidden.shape[0] * elem)))


def fused_linear_logprobs(hidden, weight, labels, *, bias=None, ignore_index=-100, temperature=1.0,
                          return_entropy=False):
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"alignkit: `labels` must have shape hidden.shape[:-1] = "
                         f"{tuple(hidden.shape[:-1])}, got {tuple(labels.shape)}")
    shape = labels.shape
    h2 = hidden.reshape(-1, hidden.shape[-1])
    logp, _, ent, _ = _ops.fused_linear_logprobs_fwd(h2, weight, bias, labels.reshape(-1), ignore_index,
                                                     float(temperature), return_entropy,
                                                     fused_cache_cols(h2, weight, bias))
    return (logp.view(shape), ent.view(shape)) if return_entropy else logp.view(shape)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta=0.1, loss_type="sigmoid",
             label_smoothing=0.0):
    # the rewards come back detached: the C++ autograd marks them non-differentiable
    losses, chosen, rejected, _ = _ops.dpo_loss_fwd.default(policy_chosen, policy_rejected, ref_chosen,
                                                            ref_rejected, float(beta), loss_type,
                                                            float(label_smoothing))
    return losses, chosen, rejected


_PPO_STATS = ("clipfrac", "approx_kl", "kl", "entropy")


def ppo_loss(logprobs, old_logprobs, advantages, mask, *, clip_eps=0.2, clip_eps_high=None, dual_clip=None,
             ref_logprobs=None, kl_coef=0.0, kl_estimator="k1", entropy=None, entropy_coef=0.0,
             agg="token-mean"):
    loss, stats = _ops.ppo_loss_fwd(
        logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy, float(clip_eps),
        float(clip_eps if clip_eps_high is None else clip_eps_high),
        -1.0 if dual_clip is None else float(dual_clip), float(kl_coef), kl_estimator,
        float(entropy_coef), agg)
    stats = stats.detach()
    return loss, {name: stats[i] for i, name in enumerate(_PPO_STATS)}


def value_loss(values, old_values, returns, mask, *, clip_eps=0.2, agg="token-mean"):
    loss, clipfrac = _ops.value_loss_fwd(values, old_values, returns, mask,
                                         -1.0 if clip_eps is None else float(clip_eps), agg)
    return loss, {"clipfrac": clipfrac.detach()}


def gae(rewards, values, mask, *, gamma=1.0, lam=0.95):
    return _ops.gae(rewards.detach(), values.detach(), mask, float(gamma), float(lam))


def masked_whiten(x, mask):
    return _ops.masked_whiten_fwd(x, mask)[0]
