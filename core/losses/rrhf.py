"""RRHF: Rank Responses to align language models with Human Feedback (Yuan et al. 2023,
arXiv:2304.05302; reference code github.com/GanjinZero/RRHF, ``train.py``).

Per prompt with ``k`` scored responses, ``S_i`` the *summed* policy log-prob of
response ``i`` over its ``len_i`` response tokens and ``r_i`` its reward::

    p_i    = S_i / len_i ** alpha                         (alpha = length_penalty; 1 -> mean)
    L_rank = sum over ordered pairs r_i < r_j of max(0, p_i - p_j)
    L_sft  = -S_b / len_b     b = argmax_i r_i (first on ties): token-mean NLL of the best
    loss   = rank_weight * L_rank + L_sft                 (mean over prompts)

Conventions chosen here (``docs/algorithms.md`` is the contract):

* The rank term *sums* over pairs (as the reference code does), it is not averaged.
* Ties give no pair; the best response is the first maximal one in input order.
* ``valid=False`` entries (list padding) take part in neither term; a prompt with a
  single valid response contributes only its SFT term.
* Rewards are data: no gradient flows through them.
"""
from __future__ import annotations

import torch

from alignkit.losses._lists import check_lists

__all__ = ["rrhf_loss"]


def rrhf_loss(
    sum_logps: torch.Tensor,
    lengths: torch.Tensor,
    rewards: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    length_penalty: float = 1.0,
    rank_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RRHF loss of a batch of ranked lists.

    Args:
        sum_logps: ``[B, K]`` summed policy log-prob of each response, ``S``.
        lengths: ``[B, K]`` number of response tokens (incl. EOS) of each response.
        rewards: ``[B, K]`` scores (any order).
        valid: ``[B, K]`` bool, False for list padding (default: all valid).
        length_penalty: ``alpha`` in ``p = S / len**alpha``.
        rank_weight: ``w`` multiplying the rank term.

    Returns:
        ``(loss, metrics)``; metrics ``loss``, ``loss/rank``, ``loss/sft``,
        ``rank_accuracy`` (fraction of ordered pairs with ``p_i < p_j``), detached.

    Example (one prompt, alpha = 1): S = [-4, -9, -2], len = [2, 3, 2], r = [1, 2, 0]
        -> p = [-2, -3, -1]. Pairs (worse, better): (0,1): max(0, -2+3) = 1;
        (2,1): max(0, -1+3) = 2; (2,0): max(0, -1+2) = 1 -> L_rank = 4.
        Best is index 1: L_sft = 9/3 = 3. loss = 4 + 3 = 7.
    """
    valid = check_lists(valid, sum_logps=sum_logps, lengths=lengths, rewards=rewards)
    r = rewards.detach().to(sum_logps.dtype)
    lens = lengths.to(sum_logps.dtype).clamp(min=1)
    S = torch.where(valid, sum_logps, torch.zeros_like(sum_logps))
    p = S / lens.pow(length_penalty)  # [B, K]

    # pairs[b, i, j]: response i is worse than response j, both valid.
    pairs = (r.unsqueeze(2) < r.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)
    hinge = (p.unsqueeze(2) - p.unsqueeze(1)).clamp(min=0)  # [B, i, j] = max(0, p_i - p_j)
    rank = torch.where(pairs, hinge, torch.zeros_like(hinge)).sum(dim=(1, 2))  # [B]

    key = torch.where(valid, r, torch.full_like(r, float("-inf")))
    best = key.argmax(dim=1, keepdim=True)  # torch returns the first maximal index
    sft = -(S.gather(1, best) / lens.gather(1, best)).squeeze(1)  # [B]
    sft = torch.where(valid.any(1), sft, torch.zeros_like(sft))

    loss_rank = rank.mean()
    loss_sft = sft.mean()
    loss = rank_weight * loss_rank + loss_sft
    with torch.no_grad():
        npairs = pairs.sum()
        acc = ((p.unsqueeze(2) < p.unsqueeze(1)) & pairs).sum().float() / npairs.clamp(min=1).float()
    metrics = {
        "loss": loss.detach(),
        "loss/rank": loss_rank.detach(),
        "loss/sft": loss_sft.detach(),
        "rank_accuracy": acc,
    }
    return loss, metrics
