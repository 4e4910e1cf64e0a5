"""SimPO's loss on length-normalised sequence log-probs (pure tensors in, ``(loss, metrics)`` out)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.api import preference_metrics


def simpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, *, beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO loss from the policy's **mean** response-token log-probs ``[B]`` of chosen and rejected.

    With rewards ``r = β · mean log π(y|x)`` (``= β/|y| · log π(y|x)``) and ``h = r_c - r_r - γ``::

        loss = mean over the batch of  -(1-ε)·logσ(h) - ε·logσ(-h)

    ``γ`` is the target margin in reward units (TRL's ``simpo_gamma``; the paper's γ/β ratio is
    ``gamma / beta``); ``ε`` (label smoothing) is the assumed rate of flipped labels.

    Example: chosen mean -1, rejected mean -2, β=2, γ=0.5, ε=0: h = -2 + 4 - 0.5 = 1.5,
    loss = -logσ(1.5) = log(1 + e^-1.5) = 0.2014.
    Metrics: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins`` (``r_c - r_r``),
    ``rewards/accuracies`` (``r_c > r_r``, ties half), ``logps/chosen``, ``logps/rejected`` (the means).
    """
    r_c, r_r = beta * chosen_mean, beta * rejected_mean
    h = r_c - r_r - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return losses.mean(), preference_metrics(r_c, r_r, chosen_mean, rejected_mean)
