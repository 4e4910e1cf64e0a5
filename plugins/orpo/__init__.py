"""ORPO: monolithic preference optimisation without a reference model
(Hong, Lee & Thorne 2024, arXiv:2403.07691).

One loss does supervised fine-tuning on the chosen response and pushes the odds of the
chosen response above those of the rejected one. With ``m`` a response's mean token log-prob
(labels only, EOS included) and ``odds(y) = p / (1 - p)`` of ``p = e^m``::

    loss = -m_c + β · -logσ(log odds(y_c) - log odds(y_r)),   log odds(y) = m - log(1 - e^m)

``algo.beta`` is the paper's λ (TRL's ``beta``; default 0.1). ``log(1 - e^m)`` is computed as
``log(-expm1(m))`` with ``m`` clamped to ``<= -1e-6``, so the loss stays finite when a response
becomes certain. The NLL term is the per-response token mean, averaged over the batch.

``eval/preference_accuracy``: the fraction of held-out pairs whose chosen response has the
higher mean token log-prob (equivalently the higher odds, which grow with ``m``; ties count
half). No reference model exists, so nothing makes an untrained model sit at exactly 0.5 (as
DPO's policy = reference does): a random or pretrained model already prefers whichever
responses it finds more likely per token, so step 0 may be above or below 0.5 on a small
held-out set; training should raise it. Because ORPO also does SFT on chosen responses, the
accuracy can rise even when only the NLL term moves (chosen responses grow likelier).
"""
from __future__ import annotations

from dataclasses import dataclass

from alignkit.api import Algorithm, AlgorithmSpec, check, hookimpl

from .loss import orpo_loss


@dataclass
class ORPOConfig:
    beta: float = 0.1  # λ: weight of the odds-ratio term next to the chosen response's NLL

    def __post_init__(self) -> None:
        check(self, beta=">= 0")


class ORPO(Algorithm):
    data_kind = "preference"
    needs_reference = False

    def compute_loss(self, batch):
        chosen, rejected = self.run.pair_logprobs(self.run.policy, batch)["mean"]  # [B] each
        loss, metrics = orpo_loss(chosen, rejected, beta=self.cfg.beta)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def evaluate(self, batch):
        out = super().evaluate(batch)
        out["preference_accuracy"] = out["rewards/accuracies"]  # mean token log-probs (= odds order), ties = 0.5
        return out


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("orpo", ORPOConfig, ORPO,
                          "ORPO: reference-free odds-ratio preference term plus NLL on the chosen response",
                          paper="Hong et al. 2024, arXiv:2403.07691")]
