"""alignkit.ops: the Python face of alignkit's kernels.

Every op has a compiled implementation (``alignkit._C``: CPU C++ and CUDA kernels registered with the
PyTorch dispatcher under ``torch.ops.alignkit``, with autograd formulas and fake kernels so
``torch.compile(fullgraph=True)`` traces them) and a pure-PyTorch reference in
:mod:`alignkit.ops.reference`. Which one runs is chosen by :func:`set_backend`:

* ``"auto"`` (default): the kernels when the extension is importable, else the reference with ONE warning;
* ``"kernel"``: the kernels, raising if the extension is missing;
* ``"reference"``: always the reference (useful for debugging and parity checks).

Ops take already aligned inputs: the causal shift belongs to the caller.
"""
from __future__ import annotations

import warnings
from typing import Literal

import torch

from . import reference

__all__ = [
    "logprobs", "fused_linear_logprobs", "dpo_loss", "ppo_loss", "value_loss", "gae", "masked_whiten",
    "set_backend", "get_backend", "kernels_available", "reference",
]

Backend = Literal["auto", "kernel", "reference"]
_BACKENDS = ("auto", "kernel", "reference")
_requested: str = "auto"
_kernel_module = None    # alignkit.ops._kernels once loaded
_load_error: str | None = None
_warned = False


def _load_kernels():
    global _kernel_module, _load_error
    if _kernel_module is None and _load_error is None:
        try:
            import importlib
            _kernel_module = importlib.import_module(f"{__name__}._kernels")
        except (ImportError, OSError) as e:  # extension not built, or built against another torch
            _load_error = f"{type(e).__name__}: {e}"
    return _kernel_module


def kernels_available() -> bool:
    """True when the compiled extension ``alignkit._C`` loads."""
    return _load_kernels() is not None


def set_backend(name: Backend) -> None:
    """Select the implementation of every op: ``"auto"``, ``"kernel"`` or ``"reference"``.

    ``"kernel"`` raises ``RuntimeError`` right away if the extension cannot be loaded.
    """
    global _requested
    if name not in _BACKENDS:
        raise ValueError(f"ops backend must be one of {_BACKENDS}, got {name!r}")
    if name == "kernel" and not kernels_available():
        raise RuntimeError(f"ops.backend=kernel but the alignkit._C extension failed to load "
                           f"({_load_error}); build it with `pip install --no-build-isolation -e .`")
    _requested = name


def get_backend() -> str:
    """The backend ops actually use now: ``"kernel"`` or ``"reference"``."""
    return _impl_name()


def _impl_name() -> str:
    global _warned
    if _requested == "reference":
        return "reference"
    if kernels_available():
        return "kernel"
    if _requested == "kernel":
        raise RuntimeError(f"ops.backend=kernel but alignkit._C failed to load ({_load_error})")
    if not _warned:
        warnings.warn(f"alignkit._C is not available ({_load_error}); alignkit.ops falls back to "
                      "the pure-PyTorch reference (slower, more memory). Build the extension with "
                      "`pip install --no-build-isolation -e .`.", RuntimeWarning, stacklevel=3)
        _warned = True
    return "reference"


def _impl():
    return _kernel_module if _impl_name() == "kernel" else reference


def logprobs(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100,
             temperature: float = 1.0, return_entropy: bool = False):
    """Per-token ``log_softmax(logits / temperature)[label]`` (fp32; 0 where ``label == ignore_index``).

    logits ``[..., V]`` (fp32/bf16/fp16/fp64), labels ``[...]`` int64 → logp ``[...]``; with
    ``return_entropy=True`` returns ``(logp, entropy)``. Differentiable w.r.t. logits; the kernel saves
    only per-row statistics. A label outside ``[0, V)`` other than ``ignore_index`` raises.
    """
    return _impl().logprobs(logits, labels, ignore_index=ignore_index, temperature=temperature,
                            return_entropy=return_entropy)


def fused_linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                          bias: torch.Tensor | None = None, ignore_index: int = -100,
                          temperature: float = 1.0, return_entropy: bool = False):
    """``logprobs(hidden @ weight.T (+ bias), labels, ...)`` without materialising the logits.

    hidden ``[..., H]``, weight ``[V, H]`` (the lm_head), bias ``[V]`` or None, labels ``[...]`` →
    logp ``[...]`` (and entropy). Gradients flow to hidden, weight and bias.
    """
    return _impl().fused_linear_logprobs(hidden, weight, labels, bias=bias, ignore_index=ignore_index,
                                         temperature=temperature, return_entropy=return_entropy)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0):
    """DPO losses on ``[B]`` sequence log-probs → ``(losses[B], chosen_rewards[B], rejected_rewards[B])``.

    See :func:`alignkit.ops.reference.dpo_loss` for the formulas; for ``loss_type="ipo"`` pass mean
    (length-normalised) log-probs: the op computes ``(h - 1/(2β))^2`` on what it is given.
    """
    return _impl().dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta,
                            loss_type=loss_type, label_smoothing=label_smoothing)


def ppo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
             dual_clip: float | None = None, ref_logprobs: torch.Tensor | None = None,
             kl_coef: float = 0.0, kl_estimator: str = "k1", entropy: torch.Tensor | None = None,
             entropy_coef: float = 0.0, agg: str = "token-mean"):
    """Clipped PPO policy loss on ``[B, T]`` → ``(loss, stats)``; stats: clipfrac, approx_kl, kl, entropy.

    See :func:`alignkit.ops.reference.ppo_loss` for the exact formula.
    """
    return _impl().ppo_loss(logprobs, old_logprobs, advantages, mask, clip_eps=clip_eps,
                            clip_eps_high=clip_eps_high, dual_clip=dual_clip,
                            ref_logprobs=ref_logprobs, kl_coef=kl_coef, kl_estimator=kl_estimator,
                            entropy=entropy, entropy_coef=entropy_coef, agg=agg)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, *, clip_eps: float | None = 0.2, agg: str = "token-mean"):
    """Clipped value loss on ``[B, T]`` → ``(loss, {"clipfrac": ...})``."""
    return _impl().value_loss(values, old_values, returns, mask, clip_eps=clip_eps, agg=agg)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95):
    """GAE on ``[B, T]`` with padding anywhere → ``(advantages, returns)`` (no gradient)."""
    return _impl().gae(rewards, values, mask, gamma=gamma, lam=lam)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Whiten ``x`` over valid positions (mean 0, unbiased unit variance, eps 1e-8); 0 elsewhere.

    ``mask`` has the shape of ``x`` (any nonzero value is valid). The kernels accumulate in fp32 (fp64
    for fp64 input) over fixed chunks merged in order (the same bits on any number of threads), and NaN
    or inf at masked positions never reach the result or the gradient (the reference multiplies by the
    mask, so there they would).
    """
    return _impl().masked_whiten(x, mask)
