"""Small metric helpers shared by algorithms and the evaluation: preference accuracy and the Wilson
interval of a proportion."""
from __future__ import annotations

import math

import torch

_Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(p: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) for a proportion ``p`` observed over ``n`` trials
    (ties counted as half a win keep ``p`` a proportion); ``(0, 1)`` for ``n = 0``:
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, 95% by default."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def preference_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Fraction of pairs whose chosen score beats the rejected one; ties count 0.5
    (so an untrained policy, whose implicit rewards are all 0, scores exactly 0.5).

    Example: chosen [1, 0, 2], rejected [0, 0, 3] -> (1 + 0.5 + 0) / 3 = 0.5.
    """
    wins = (chosen_scores > rejected_scores).float() + 0.5 * (chosen_scores == rejected_scores).float()
    return float(wins.mean()) if wins.numel() else float("nan")


def preference_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor, logp_chosen: torch.Tensor,
                       logp_rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """The metrics every pairwise preference loss reports, from per-pair rewards ``[B]`` and the
    policy's sequence log-probs ``[B]`` (batch means, detached): ``rewards/chosen``,
    ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies`` (:func:`preference_accuracy`),
    ``logps/chosen``, ``logps/rejected``."""
    r_c, r_r = r_chosen.detach(), r_rejected.detach()
    return {
        "rewards/chosen": r_c.mean(),
        "rewards/rejected": r_r.mean(),
        "rewards/margins": (r_c - r_r).mean(),
        "rewards/accuracies": torch.tensor(preference_accuracy(r_c, r_r)),
        "logps/chosen": logp_chosen.detach().mean(),
        "logps/rejected": logp_rejected.detach().mean(),
    }
