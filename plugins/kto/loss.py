"""KTO's loss and reference point (pure tensors in, ``(loss, metrics)`` out)."""
from __future__ import annotations

import torch

from alignkit.api import preference_accuracy


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor,
                        count: torch.Tensor | None = None) -> torch.Tensor:
    """KTO's reference point ``z = max(0, mean(log π(y'|x) - log π_ref(y'|x)))``, detached.

    ``policy_kl_logps`` / ``ref_kl_logps`` ``[M]`` are summed log-probs of *mismatched*
    prompt/completion pairs (a prompt with another example's completion), so the mean is a
    Monte-Carlo estimate of KL(π(y|x) || π_ref(y|x)) over the batch. For an estimate over several
    processes pass the already summed differences as ``policy_kl_logps`` (with ``ref_kl_logps``
    zeros) and the total count as ``count``.

    Example: policy [-3, -5], reference [-4, -4]: mean(1, -1) = 0 -> z = 0; policy [-3, -3.5]:
    mean(1, 0.5) = 0.75 -> z = 0.75.
    """
    diff = (policy_kl_logps - ref_kl_logps).detach().float()
    n = torch.tensor(float(diff.numel()), device=diff.device) if count is None else count
    return (diff.sum() / n.clamp(min=1)).clamp(min=0)


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, z: torch.Tensor, *,
             beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KTO loss on the summed response log-probs ``[N]`` of policy and reference.

    ``desirable`` ``[N]`` (bool) labels each example; ``z`` is the detached reference point
    (:func:`kto_reference_point`). With the implicit reward ``r = log π(y|x) - log π_ref(y|x)``::

        desirable:    λ_D · (1 - σ(β(r - z)))
        undesirable:  λ_U · (1 - σ(β(z - r)))
        loss = mean over all N examples

    Example: r = [2, -1] (desirable, undesirable), z = 0.5, β = 0.1, λ = 1:
    1 - σ(0.15) = 0.46257 and 1 - σ(0.15) = 0.46257, loss = 0.46257.
    Metrics: ``kl`` (z), ``rewards/desirable`` / ``rewards/undesirable`` (mean ``β·r`` of each
    group, only when it has examples), ``logps/desirable`` / ``logps/undesirable`` likewise.
    """
    desirable = desirable.bool()
    r = (policy_logps - ref_logps).float()
    z = z.detach().float()
    losses = torch.where(desirable,
                         desirable_weight * (1 - torch.sigmoid(beta * (r - z))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z - r))))
    metrics: dict[str, torch.Tensor] = {"kl": z}
    for name, sel in (("desirable", desirable), ("undesirable", ~desirable)):
        if sel.any():
            metrics[f"rewards/{name}"] = (beta * r[sel]).mean().detach()
            metrics[f"logps/{name}"] = policy_logps[sel].mean().detach()
    return losses.mean(), metrics


def pair_accuracy(rewards: torch.Tensor, chosen_index: torch.Tensor, rejected_index: torch.Tensor) -> float | None:
    """Preference accuracy of pairs given as item indices into ``rewards`` (``r_c > r_r``, ties
    half); None when the batch holds no pairs."""
    if chosen_index.numel() == 0:
        return None
    return preference_accuracy(rewards[chosen_index].detach(), rewards[rejected_index].detach())
