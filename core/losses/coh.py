"""Chain of Hindsight (Liu, Sferrazza and Abbeel 2023, "Chain of Hindsight Aligns Language
Models with Feedback", arXiv:2302.02676; reference code github.com/lhao499/chain-of-hindsight).

Preference pairs become feedback sequences such as
``User: {prompt} A helpful answer: {chosen} An unhelpful answer: {rejected}``
(see :mod:`alignkit.plugins.coh.data`). The model is trained with plain next-token NLL, but only
on the *response* tokens (both the good and the bad response, each with its EOS);
prompt and marker tokens are context only::

    L_feedback = - sum_t m_t * logp_t / sum_t m_t        (token mean over the whole batch)
    loss       = L_feedback + lm_weight * L_lm            (L_lm: optional plain SFT/LM batch)

Conventions chosen here (``docs/algorithms.md`` is the contract):

* Token mean over all loss tokens of the batch (not a mean of per-sequence means), as the
  reference code's masked cross-entropy does.
* The loss sees only log-probs at masked-in positions, so logits predicting prompt or
  marker tokens cannot change it (the forgetful causal mask is applied to attention
  upstream, in the model call; it does not enter this function).
* ``lm_weight`` mixes an optional plain SFT/LM batch (the paper's pre-training data mix);
  it is skipped when no LM log-probs are given.
"""
from __future__ import annotations

import torch

from alignkit.losses.sft import sft_loss

__all__ = ["coh_loss"]


def coh_loss(
    token_logps: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    lm_token_logps: torch.Tensor | None = None,
    lm_mask: torch.Tensor | None = None,
    lm_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Chain-of-Hindsight loss.

    Args:
        token_logps: ``[B, T-1]`` log-prob of each next token of the feedback sequences
            (entry ``t`` scores token ``t+1``, as :func:`alignkit.modeling.token_logprobs`).
        loss_mask: ``[B, T-1]`` True on response tokens (and their EOS) only.
        lm_token_logps, lm_mask: the same for an optional plain SFT/LM batch.
        lm_weight: weight of the LM term.

    Returns:
        ``(loss, metrics)``; metrics ``loss``, ``loss/feedback``, ``ntokens`` and, with an LM
        batch, ``loss/lm``.

    Example: logp = [[-1, -2, -3], [-4, -5, -6]], mask = [[0, 1, 1], [1, 0, 0]]
        -> L = (2 + 3 + 4) / 3 = 3.
    """
    if token_logps.shape != loss_mask.shape:
        raise ValueError(f"token_logps {tuple(token_logps.shape)} and loss_mask {tuple(loss_mask.shape)} differ")
    fb = sft_loss(token_logps, loss_mask)[0]
    loss = fb
    metrics = {"loss/feedback": fb.detach(), "ntokens": loss_mask.sum().detach().float()}
    if lm_token_logps is not None and lm_weight != 0.0:
        if lm_mask is None:
            raise ValueError("lm_mask is required with lm_token_logps")
        lm = sft_loss(lm_token_logps, lm_mask)[0]
        loss = loss + lm_weight * lm
        metrics["loss/lm"] = lm.detach()
    metrics["loss"] = loss.detach()
    return loss, metrics
