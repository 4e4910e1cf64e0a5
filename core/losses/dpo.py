"""DPO and its variants (Rafailov et al. 2023; IPO: Azar et al. 2023; conservative
DPO / label smoothing: Mitchell 2023; robust DPO: Chowdhury et al. 2024).

The arithmetic lives in :func:`alignkit.ops.dpo_loss` (one fused forward and
backward); this module picks sums or means, applies ``reference_free`` and
returns the standard metrics.
"""
from __future__ import annotations

import torch

from alignkit import ops
from alignkit.metrics import preference_metrics

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor | None,
             ref_rejected: torch.Tensor | None, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO loss on sequence log-probs ``[B]`` of the policy and the reference.

    Pass **sums** of response-token log-probs for ``sigmoid``, ``hinge`` and
    ``robust`` and **means** for ``ipo`` (length-normalised, as the IPO authors
    recommend). ``ref_* = None`` means reference-free (reference terms are 0).
    With ``h = (pc - pr) - (rc - rr)``:

    * sigmoid: ``-(1-ε)·logσ(βh) - ε·logσ(-βh)``
    * ipo: ``(h - 1/(2β))²``
    * hinge: ``relu(1 - βh)``
    * robust: ``(-(1-ε)·logσ(βh) + ε·logσ(-βh)) / (1-2ε)``

    Example: pc=-1, pr=-3, rc=rr=-2, β=0.5, sigmoid, ε=0: h=2, loss=-logσ(1)=0.3133.
    Metrics: ``rewards/chosen = β(pc-rc)``, ``rewards/rejected``, ``rewards/margins``,
    ``rewards/accuracies`` (ties count half), ``logps/chosen``, ``logps/rejected``.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "robust" and not 0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    if ref_chosen is None:
        ref_chosen = torch.zeros_like(policy_chosen)
        ref_rejected = torch.zeros_like(policy_rejected)
    eps = 0.0 if loss_type == "ipo" else label_smoothing
    losses, r_c, r_r = ops.dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta,
                                    loss_type=loss_type, label_smoothing=eps)
    return losses.mean(), preference_metrics(r_c, r_r, policy_chosen, policy_rejected)
