"""``algo=rrhf``: Rank Responses to align with Human Feedback (Yuan et al. 2023, arXiv:2304.05302).

Pairwise hinge on length-normalised log-probs of ranked responses plus the NLL of the
best-scored response; no reference model. The loss is
:func:`alignkit.losses.rrhf.rrhf_loss` (formula and conventions in its docstring).
"""
from __future__ import annotations

from dataclasses import dataclass

from alignkit import AlgorithmSpec, hookimpl
from alignkit.api import check
from alignkit.losses import rrhf_loss
from alignkit.ranking import OnlineRankingConfig, RankedAlgorithm

PAPER = "Yuan et al. 2023, RRHF: Rank Responses to Align Language Models with Human Feedback (arXiv:2304.05302)"


@dataclass
class RrhfConfig(OnlineRankingConfig):
    rank_weight: float = 1.0  #: weight of the ranking hinge against the SFT term
    length_penalty: float = 1.0  #: alpha in S / len^alpha (1 = mean log-prob, 0 = sum)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, rank_weight=">= 0", length_penalty=">= 0")


class RRHF(RankedAlgorithm):
    """Trains on ranked lists; see :mod:`alignkit.ranking` for batching and evaluation."""

    def ranked_loss(self, mean, total, ntokens, scores, valid):
        return rrhf_loss(total, ntokens, scores, valid, length_penalty=self.cfg.length_penalty,
                         rank_weight=self.cfg.rank_weight)


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("rrhf", RrhfConfig, RRHF, "RRHF: ranking hinge on length-normalised log-probs + SFT",
                          PAPER)]
