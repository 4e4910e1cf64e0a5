"""``algo=pro``: Preference Ranking Optimization (Song et al. 2023, arXiv:2306.17492).

Listwise softmax over ranked responses with reward-gap temperatures, plus an
``(n-1)^2``-weighted NLL of the best response; no reference model. The loss is
:func:`alignkit.losses.pro.pro_loss` (formula and conventions in its docstring).
"""
from __future__ import annotations

from dataclasses import dataclass

from alignkit import AlgorithmSpec, hookimpl
from alignkit.api import check
from alignkit.losses import pro_loss
from alignkit.ranking import OnlineRankingConfig, RankedAlgorithm

PAPER = "Song et al. 2023, Preference Ranking Optimization for Human Alignment (arXiv:2306.17492)"


@dataclass
class ProConfig(OnlineRankingConfig):
    sft_weight: float = 0.05  #: weight of the (n-1)^2-scaled NLL of the best response
    constant_temperature: bool = False  #: every temperature 1 (tolerates tied rewards); off = reward gaps

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, sft_weight=">= 0")


class PRO(RankedAlgorithm):
    """Trains on ranked lists; see :mod:`alignkit.ranking` for batching and evaluation."""

    def tokenize(self, example: dict) -> dict | None:
        scores = example.get("scores")
        if scores is not None and not self.cfg.constant_temperature and len(set(scores)) < len(scores):
            raise ValueError(
                f"PRO: tied scores {list(scores)} in a ranked list (prompt {str(example['prompt'])[:80]!r}) make the "
                f"reward-gap temperatures degenerate; set algo.constant_temperature=true or de-duplicate the scores")
        return super().tokenize(example)

    def ranked_loss(self, mean, total, ntokens, scores, valid):
        return pro_loss(mean, total, scores, valid, sft_weight=self.cfg.sft_weight,
                        constant_temperature=self.cfg.constant_temperature)


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("pro", ProConfig, PRO, "Preference Ranking Optimization: listwise ranking + SFT", PAPER)]
