"""Bradley–Terry reward-model loss (InstructGPT, Ouyang et al. 2022, eq. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None,
                       center_rewards: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mean(-logsigmoid(r_chosen - r_rejected - margin)) + c * mean((r_chosen + r_rejected)^2)``.

    Args: rewards ``[P]`` of the preferred and dispreferred response of each
    pair, optional ``margin [P]`` (0 when absent), ``center_rewards`` = ``c``.
    Metrics: ``accuracy = mean(r_chosen > r_rejected)``, mean rewards and margin.

    Example: r_c = [2, 0], r_r = [0, 0] -> (-logσ(2) - logσ(0)) / 2 = (0.1269 + 0.6931) / 2 = 0.4100.
    """
    diff = r_chosen - r_rejected  # [P]
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards:
        loss = loss + center_rewards * ((r_chosen + r_rejected) ** 2).mean()
    return loss, {
        "accuracy": (r_chosen > r_rejected).float().mean().detach(),
        "rewards/chosen": r_chosen.mean().detach(),
        "rewards/rejected": r_rejected.mean().detach(),
        "rewards/margins": (r_chosen - r_rejected).mean().detach(),
    }


def ranked_pairs(scores: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ordered pairs ``(better, worse)`` of each prompt's ranked list.

    Args: ``scores [B, K]``, ``valid [B, K]``. Returns flat indices into ``[B*K]``
    of the better and worse response of each pair with different scores (ties
    give no pair), and ``weight [P]`` = 1 / (number of pairs of its prompt), so a
    weighted sum is the mean over pairs of each prompt, summed over prompts.
    """
    B, K = scores.shape
    better = (scores[:, :, None] > scores[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # [B, K, K]
    b, i, j = better.nonzero(as_tuple=True)
    per_prompt = better.sum((1, 2)).clamp(min=1)  # [B]
    return b * K + i, b * K + j, 1.0 / per_prompt[b].float()


def ranked_bradley_terry_loss(rewards: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor,
                              center_rewards: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley–Terry over ranked lists: all pairs with different scores, mean over
    the pairs of each prompt, then mean over prompts (algorithms.md).

    Args: model rewards ``[B, K]``, data ``scores [B, K]``, ``valid [B, K]``.
    """
    hi, lo, w = ranked_pairs(scores, valid)
    flat = rewards.reshape(-1)
    r_hi, r_lo = flat[hi], flat[lo]  # [P]
    n_prompts = w.sum().clamp(min=1)
    loss = (-F.logsigmoid(r_hi - r_lo) * w).sum() / n_prompts
    if center_rewards:
        loss = loss + center_rewards * ((r_hi + r_lo) ** 2 * w).sum() / n_prompts
    return loss, {"accuracy": (r_hi > r_lo).float().mean().detach(), "pairs": torch.tensor(float(len(hi)))}
