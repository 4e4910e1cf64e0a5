"""Supervised fine-tuning loss."""
from __future__ import annotations

import torch


def sft_loss(token_logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-mean negative log-likelihood over loss tokens.

    Args: ``token_logp [B, T]`` per-token log-probs, ``mask [B, T]`` (True on
    response tokens; for plain LM data, on every token).
    Returns ``(loss, {"nll": loss, "ntokens": n})``. The mean runs over all loss
    tokens of the batch, so long responses weigh more (TRL and torchtune do the same).

    Example: logp = [[-1, -3], [-2, 0]], mask = [[1, 1], [1, 0]] -> (1 + 3 + 2) / 3 = 2.
    """
    n = mask.sum()
    # where(): a masked-out position never leaks into the sum, even if it holds -inf or NaN
    loss = -torch.where(mask.bool(), token_logp, torch.zeros_like(token_logp)).sum() / n.clamp(min=1)
    return loss, {"nll": loss.detach(), "ntokens": n.detach().float()}
