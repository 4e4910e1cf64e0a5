"""ORPO's loss on mean token log-probs (pure tensors in, ``(loss, metrics)`` out)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.api import preference_accuracy

#: mean log-probs are clamped to at most this before ``log(1 - exp(m))``, which is -inf at m = 0
MAX_MEAN_LOGP = -1e-6


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` of ``p = exp(m)``, the per-token-averaged probability of a response:
    ``m - log(1 - exp(m))``, computed as ``m - log(-expm1(m))`` (exact for m near 0 and very
    negative m alike) with ``m`` clamped to ``<= MAX_MEAN_LOGP`` so it stays finite."""
    m = mean_logp.clamp(max=MAX_MEAN_LOGP)
    return m - torch.log(-torch.expm1(m))


def orpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, *,
              beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO loss from the policy's **mean** response-token log-probs ``[B]`` (``m_c``, ``m_r``)::

        loss = mean over the batch of  -m_c  +  β · -logσ(log_odds(m_c) - log_odds(m_r))

    ``-m_c`` is the chosen response's token-mean NLL (the SFT term; each pair weighs the same
    whatever its length), ``log_odds(m) = m - log(1 - e^m)`` and ``β`` is the paper's λ.

    Example: m_c = log 0.5, m_r = log 0.25, β = 0.1: odds 1 and 1/3, so the log odds ratio is
    log 3 = 1.0986, ``-logσ(log 3) = log(1 + 1/3) = 0.2877``, loss = 0.6931 + 0.02877 = 0.7219.
    Metrics: ``nll`` (the SFT term), ``or_loss`` (``-logσ(...)`` before β), ``log_odds_ratio``,
    ``rewards/chosen`` / ``rewards/rejected`` (``β · m``, as TRL logs them), ``rewards/margins``,
    ``rewards/accuracies`` (``m_c > m_r``, ties half; the same order as the log odds, which
    increase with m), ``logps/chosen``, ``logps/rejected`` (the means).
    """
    ratio = log_odds(chosen_mean) - log_odds(rejected_mean)
    or_losses = -F.logsigmoid(ratio)
    nll = -chosen_mean
    loss = (nll + beta * or_losses).mean()
    r_c, r_r = beta * chosen_mean.detach(), beta * rejected_mean.detach()
    return loss, {
        "nll": nll.mean().detach(),
        "or_loss": or_losses.mean().detach(),
        "log_odds_ratio": ratio.mean().detach(),
        "rewards/chosen": r_c.mean(),
        "rewards/rejected": r_r.mean(),
        "rewards/margins": (r_c - r_r).mean(),
        "rewards/accuracies": torch.tensor(preference_accuracy(chosen_mean.detach(), rejected_mean.detach())),
        "logps/chosen": chosen_mean.mean().detach(),
        "logps/rejected": rejected_mean.mean().detach(),
    }
