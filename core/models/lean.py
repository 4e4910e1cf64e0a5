"""Lean activations (``model.lean_activations``): the same forward, fewer tensors kept for backward.

A Llama-family decoder layer under autograd keeps, per token, about a dozen hidden-size vectors for the
backward pass. Two of its blocks keep more than their backward needs:

* **RMSNorm** ``y = w * (x * rstd)`` keeps ``x`` (for the variance) and ``x̂ = x * rstd`` (for the
  weight's gradient), while the next linear layer keeps ``y`` anyway. :class:`RMSNormFunction` keeps ``y``
  and ``rstd [.., 1]`` and recovers ``x̂ = y / w`` in backward (fp32 on the CPU, no zero weight entry;
  otherwise it keeps ``x`` and ``rstd`` and recomputes ``x̂``). Saved per norm and token beyond the next
  layer's input: nothing instead of ``2H`` floats (``H`` in the fallback).
* **SwiGLU MLP** ``down(silu(g) * u)`` keeps ``g`` (for silu), ``silu(g)`` and ``u`` (for the product)
  and ``h = silu(g) * u`` (for ``down``'s weight gradient). :class:`SwiGLUDownFunction` keeps ``g`` and
  ``u`` and recomputes ``silu(g)`` and ``h`` in backward, elementwise work only. Saved per MLP and token:
  ``2I`` floats instead of ``4I``.

For SmolLM2-135M (H = 576, I = 1,536) that is 4H + 2I = 5,376 fewer floats per token and layer (21 KiB),
roughly 40% of the layer activations. Forward values are bitwise those of the ``transformers`` modules (the
same ATen ops in the same order); gradients agree to float rounding (``x̂ = y / w`` rounds once more).

:func:`apply_lean_activations` rebinds ``forward`` of the supported module classes in place: parameters,
``state_dict`` keys and saved checkpoints are unchanged. Outside autograd (``torch.no_grad``, generation)
and under autocast the original forward runs. An MLP whose ``down_proj`` is not a plain ``nn.Linear``
(a LoRA-wrapped one, say) keeps its original forward.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

__all__ = ["RMSNormFunction", "SwiGLUDownFunction", "apply_lean_activations", "LEAN_NORMS", "LEAN_MLPS"]

#: module classes (by name) whose forward is ``weight * (x.float() * rsqrt(mean(x²) + eps)).to(x.dtype)``
LEAN_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
#: module classes (by name) whose forward is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``
LEAN_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})


class RMSNormFunction(torch.autograd.Function):
    """``weight * (x.float() * rsqrt(mean(x², -1) + eps)).to(x.dtype)``; x ``[..., H]``, weight ``[H]``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.to(torch.float32)
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # [..., 1]
        y = weight * (x32 * rstd).to(x.dtype)  # [..., H]
        # y / w gives back x̂ to a rounding only when both are fp32 and no weight entry is 0; the check reads
        # the weights on the host, so on an accelerator (where it would stall the stream) x is kept instead
        ctx.from_output = (x.device.type == "cpu" and x.dtype == weight.dtype == y.dtype == torch.float32
                           and bool((weight != 0).all()))
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(y if ctx.from_output else x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        kept, weight, rstd = ctx.saved_tensors
        # x̂ in fp32 for the input's gradient, and rounded to the input dtype (as the forward multiplied it
        # with the weight) for the weight's
        xhat32 = kept / weight if ctx.from_output else kept.to(torch.float32) * rstd  # [..., H]
        dw = None
        if ctx.needs_input_grad[1]:
            dw = (dy * xhat32.to(ctx.x_dtype)).reshape(-1, dy.shape[-1]).sum(0).to(weight.dtype)  # [H]
        dx = None
        if ctx.needs_input_grad[0]:
            g = (dy * weight).to(ctx.x_dtype).to(torch.float32)  # dL/dx̂ [..., H]
            dx = (rstd * (g - xhat32 * (g * xhat32).mean(-1, keepdim=True))).to(ctx.x_dtype)  # [..., H]
        return dx, dw, None


class SwiGLUDownFunction(torch.autograd.Function):
    """``F.linear(silu(g) * u, weight, bias)``; g, u ``[..., I]``, weight ``[H, I]``, bias ``[H]`` or None."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.has_bias = bias is not None
        ctx.save_for_backward(g, u, weight)
        return F.linear(F.silu(g) * u, weight, bias)  # [..., H]

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        g, u, weight = ctx.saved_tensors
        s = F.silu(g)  # [..., I]
        dh = dy @ weight  # [..., I]
        dw = db = None
        if ctx.needs_input_grad[2]:
            h = s * u
            dw = dy.reshape(-1, dy.shape[-1]).t() @ h.reshape(-1, h.shape[-1])  # [H, I]
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db = dy.reshape(-1, dy.shape[-1]).sum(0)
        dg = torch.ops.aten.silu_backward(dh * u, g) if ctx.needs_input_grad[0] else None
        du = dh * s if ctx.needs_input_grad[1] else None
        return dg, du, dw, db


def _autograd_active(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and not torch.is_autocast_enabled(t.device.type)


def _norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not _autograd_active(hidden_states):
        return type(self).forward(self, hidden_states)
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not _autograd_active(x):
        return type(self).forward(self, x)
    return SwiGLUDownFunction.apply(self.gate_proj(x), self.up_proj(x), self.down_proj.weight, self.down_proj.bias)


def _is_silu(act) -> bool:
    # torch's nn.SiLU or transformers' SiLUActivation (both F.silu)
    return type(act).__name__ in ("SiLU", "SiLUActivation")


def apply_lean_activations(model: torch.nn.Module) -> dict[str, int]:
    """Rebind the forward of every supported RMSNorm and SwiGLU MLP module of ``model`` (in place).

    Returns how many of each were changed: ``{"norms": n, "mlps": m}``; both 0 for an architecture
    without supported modules (its forward stays as it was)."""
    counts = {"norms": 0, "mlps": 0}
    for module in model.modules():
        name = type(module).__name__
        if "forward" in vars(module):  # already rebound (by this function or by another patcher)
            continue
        if name in LEAN_NORMS and isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            module.forward = types.MethodType(_norm_forward, module)
            counts["norms"] += 1
        elif (name in LEAN_MLPS and type(getattr(module, "down_proj", None)) is torch.nn.Linear
              and _is_silu(getattr(module, "act_fn", None))):
            module.forward = types.MethodType(_mlp_forward, module)
            counts["mlps"] += 1
    return counts
