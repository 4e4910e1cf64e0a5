"""Pure-PyTorch reference implementations of every op in :mod:`alignkit.ops`.

These are the ground truth the kernels are tested against, and the fallback used when the
compiled extension ``alignkit._C`` is unavailable (``ops.backend: reference``). They are written
for clarity, not speed: each is the textbook composition of eager torch ops, with the exact
semantics of ``docs/kernels.md`` and ``docs/algorithms.md``.

Conventions shared by all ops:
  * log-prob ops return float32 (float64 when the input is float64) whatever the input dtype;
  * masks may be bool or numeric; a position is valid where ``mask != 0``;
  * ``agg`` is one of ``token-mean`` (sum over valid tokens / number of valid tokens),
    ``seq-mean-token-mean`` (per-row token mean, then mean over rows that have a valid token) or
    ``seq-mean-token-sum`` (per-row token sum, then mean over rows that have a valid token).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "logprobs", "fused_linear_logprobs", "dpo_loss", "ppo_loss", "value_loss", "gae",
    "masked_whiten", "masked_agg", "AGG_MODES", "DPO_LOSS_TYPES", "KL_ESTIMATORS",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")
KL_ESTIMATORS = ("k1", "k3")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# Log-probabilities
# ----------------------------------------------------------------------------------------------
def logprobs(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100,
             temperature: float = 1.0, return_entropy: bool = False):
    """``log_softmax(logits / temperature)[label]`` per position, 0 where ``label == ignore_index``.

    logits: ``[..., V]`` float; labels: ``[...]`` int64. Returns fp32 ``logp[...]`` and, with
    ``return_entropy``, a tuple ``(logp, entropy)`` (entropy of ``softmax(logits / temperature)``,
    0 at ignored positions).
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal logits.shape[:-1] "
                         f"{tuple(logits.shape[:-1])}")
    V = logits.shape[-1]
    valid = labels != ignore_index
    if bool(((labels[valid] < 0) | (labels[valid] >= V)).any()):
        raise ValueError(f"labels must be in [0, {V}) or equal ignore_index={ignore_index}")
    z = logits.to(_acc_dtype(logits.dtype)) / temperature
    logsm = torch.log_softmax(z, dim=-1)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    logp = logsm.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(valid, logp, torch.zeros_like(logp))
    if not return_entropy:
        return logp
    ent = -(logsm.exp() * logsm).sum(-1)
    ent = torch.where(valid, ent, torch.zeros_like(ent))
    return logp, ent


def fused_linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                          bias: torch.Tensor | None = None, ignore_index: int = -100,
                          temperature: float = 1.0, return_entropy: bool = False):
    """``logprobs(hidden @ weight.T + bias, labels, ...)``.

    hidden: ``[..., H]``; weight: ``[V, H]``; bias: ``[V]`` or None; labels: ``[...]``.
    The reference materialises the logits (in the inputs' dtype, as eager code would).
    """
    logits = F.linear(hidden, weight, bias)
    return logprobs(logits, labels, ignore_index=ignore_index, temperature=temperature,
                    return_entropy=return_entropy)


# ----------------------------------------------------------------------------------------------
# DPO
# ----------------------------------------------------------------------------------------------
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0):
    """Per-pair DPO losses on ``[B]`` sequence log-probs (algorithms.md).

    ``h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)``;
      sigmoid: ``-(1-ε)·logσ(βh) - ε·logσ(-βh)``;  hinge: ``relu(1 - βh)``;
      ipo: ``(h - 1/(2β))^2`` (the caller passes *mean* log-probs for IPO; the op uses what it gets;
      label smoothing does not apply);  robust: ``(-(1-ε)·logσ(βh) + ε·logσ(-βh)) / (1-2ε)``.
    Returns ``(losses[B], chosen_rewards[B], rejected_rewards[B])``; the rewards
    ``β·(policy - ref)`` are detached metrics.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    chosen_rewards = (beta * (policy_chosen - ref_chosen)).detach()
    rejected_rewards = (beta * (policy_rejected - ref_rejected)).detach()
    return losses, chosen_rewards, rejected_rewards


# ----------------------------------------------------------------------------------------------
# PPO
# ----------------------------------------------------------------------------------------------
def masked_agg(x: torch.Tensor, mask: torch.Tensor, agg: str = "token-mean") -> torch.Tensor:
    """Aggregate ``x[B, T]`` over valid positions (see module docstring for the modes)."""
    m = (mask != 0).to(x.dtype)
    if agg == "token-mean":
        return (x * m).sum() / m.sum().clamp(min=1)
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    per_row = (x * m).sum(-1)
    n = m.sum(-1)
    if agg == "seq-mean-token-mean":
        per_row = per_row / n.clamp(min=1)
    return per_row.sum() / (n > 0).sum().clamp(min=1).to(x.dtype)


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).sum() / m.sum().clamp(min=1)


def ppo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
             dual_clip: float | None = None, ref_logprobs: torch.Tensor | None = None,
             kl_coef: float = 0.0, kl_estimator: str = "k1", entropy: torch.Tensor | None = None,
             entropy_coef: float = 0.0, agg: str = "token-mean"):
    """Clipped PPO policy loss on ``[B, T]`` tensors (algorithms.md).

    Per token: ``ratio = exp(logp - old_logp)``,
    ``pg = max(-A·ratio, -A·clip(ratio, 1-clip_eps, 1+clip_eps_high))`` (``clip_eps_high``
    defaults to ``clip_eps``); with ``dual_clip = c``, tokens with ``A < 0`` use ``min(pg, -c·A)``.
    Optional KL penalty ``kl_coef·kl_t`` against ``ref_logprobs`` (``k1 = logp - ref``,
    ``k3 = exp(ref - logp) - (ref - logp) - 1``) and entropy bonus ``-entropy_coef·entropy_t``.
    ``loss = agg(pg + kl_coef·kl - entropy_coef·entropy)``.

    Returns ``(loss, stats)``, stats a dict of detached scalars over valid tokens:
    ``clipfrac`` (fraction where the clipped branch is active), ``approx_kl``
    (``0.5·mean((logp - old_logp)^2)``), ``kl`` (mean kl_t, 0 without a reference) and
    ``entropy`` (mean entropy, 0 when not given).
    """
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
    hi = clip_eps if clip_eps_high is None else clip_eps_high
    m = (mask != 0).to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + hi)
    pg = torch.maximum(pg1, pg2)
    if dual_clip is not None:
        pg = torch.where(advantages < 0, torch.minimum(pg, -dual_clip * advantages), pg)
    per_tok = pg
    kl = torch.zeros_like(logprobs)
    if ref_logprobs is not None:
        d = ref_logprobs - logprobs
        kl = -d if kl_estimator == "k1" else torch.exp(d) - d - 1
        per_tok = per_tok + kl_coef * kl
    ent = torch.zeros_like(logprobs) if entropy is None else entropy
    if entropy is not None:
        per_tok = per_tok - entropy_coef * entropy
    loss = masked_agg(per_tok, m, agg)
    with torch.no_grad():
        stats = {
            "clipfrac": _masked_mean((pg2 > pg1).to(m.dtype), m),
            "approx_kl": _masked_mean(0.5 * log_ratio ** 2, m),
            "kl": _masked_mean(kl, m),
            "entropy": _masked_mean(ent, m),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, *, clip_eps: float | None = 0.2, agg: str = "token-mean"):
    """Clipped value loss ``0.5·max((V-R)^2, (clip(V, V_old±ε) - R)^2)`` aggregated by ``agg``.

    ``clip_eps=None`` disables clipping. Returns ``(loss, {"clipfrac": ...})``.
    """
    m = (mask != 0).to(values.dtype)
    l1 = (values - returns) ** 2
    if clip_eps is None:
        per_tok = 0.5 * l1
        clipfrac = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        vc = torch.clamp(values, old_values - clip_eps, old_values + clip_eps)
        l2 = (vc - returns) ** 2
        per_tok = 0.5 * torch.maximum(l1, l2)
        with torch.no_grad():
            clipfrac = _masked_mean((l2 > l1).to(m.dtype), m)
    return masked_agg(per_tok, m, agg), {"clipfrac": clipfrac}


# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95):
    """Generalised advantage estimation on ``[B, T]`` (kernels.md), a reverse scan per row.

    ``δ_t = r_t + γ·V_next - V_t``, ``A_t = δ_t + γλ·A_next``, where ``V_next``/``A_next`` come from
    the nearest later valid position (0 if none). Masked positions pass them through and output 0.
    Returns ``(advantages, returns = advantages + values)`` (0 at masked positions).
    """
    B, T = rewards.shape
    acc = _acc_dtype(rewards.dtype)
    r, v, valid = rewards.to(acc), values.to(acc), mask != 0
    adv = torch.zeros(B, T, dtype=acc, device=rewards.device)
    next_v = torch.zeros(B, dtype=acc, device=rewards.device)
    next_a = torch.zeros(B, dtype=acc, device=rewards.device)
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_v - v[:, t]
        a = delta + gamma * lam * next_a
        m = valid[:, t]
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_v = torch.where(m, v[:, t], next_v)
        next_a = torch.where(m, a, next_a)
    ret = torch.where(valid, adv + v, torch.zeros_like(adv))
    return adv.to(rewards.dtype), ret.to(rewards.dtype)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over valid positions (unbiased variance); 0 elsewhere."""
    m = (mask != 0).to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1)
    xc = (x - mean) * m
    var = (xc * xc).sum() / (n - 1).clamp(min=1)
    return xc * torch.rsqrt(var + eps)
