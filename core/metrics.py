"""Small metric helpers shared by algorithms."""
from __future__ import annotations

import torch


def preference_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Fraction of pairs whose chosen score beats the rejected one; ties count 0.5
    (so an untrained policy, whose implicit rewards are all 0, scores exactly 0.5).

    Example: chosen [1, 0, 2], rejected [0, 0, 3] -> (1 + 0.5 + 0) / 3 = 0.5.
    """
    wins = (chosen_scores > rejected_scores).float() + 0.5 * (chosen_scores == rejected_scores).float()
    return float(wins.mean()) if wins.numel() else float("nan")
