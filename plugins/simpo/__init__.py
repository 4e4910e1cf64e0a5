"""SimPO: simple preference optimisation with a reference-free, length-normalised reward
(Meng, Xia & Chen 2024, arXiv:2405.14734).

The implicit reward of a response is its policy log-prob per token, scaled:
``r(x, y) = β/|y| · log π(y|x) = β · mean_t log π(y_t | x, y_<t)``; the loss asks the chosen
response to beat the rejected one by a target margin ``γ``::

    loss = -logσ(r_c - r_r - γ)          (label_smoothing ε: -(1-ε)·logσ(h) - ε·logσ(-h))

``algo.gamma`` is the margin itself, in reward units, as in the paper's equation and TRL's
``simpo_gamma``; the paper's tables quote the ratio γ/β, which here is ``gamma / beta``
(defaults: β=2.0, γ=0.5, so γ/β=0.25). No reference model is loaded. The response tokens are
those with labels (EOS included), so ``|y|`` counts the end-of-response token too.

``eval/preference_accuracy``: the fraction of held-out pairs whose chosen response has the
higher length-normalised log-prob (``r_c > r_r``; ties count half). Being reference-free, the
scores of an untrained model are not all equal as they are for DPO (where policy = reference
makes every implicit reward 0 and the accuracy exactly 0.5): a random or pretrained model
already prefers whichever responses it finds more likely per token (shorter, more common
words, ...), so step 0 can sit anywhere around 0.5 on a small held-out set; what matters is
that it rises with training.
"""
from __future__ import annotations

from dataclasses import dataclass

from alignkit.api import Algorithm, AlgorithmSpec, check, hookimpl

from .loss import simpo_loss


@dataclass
class SimPOConfig:
    beta: float = 2.0  # reward scale: r = beta * mean token log-prob of the response
    gamma: float = 0.5  # target reward margin between chosen and rejected (gamma/beta is the paper's ratio)
    label_smoothing: float = 0.0  # ε: assumed rate of flipped labels (0 = plain SimPO)

    def __post_init__(self) -> None:
        check(self, beta="> 0", gamma=">= 0", label_smoothing="in [0, 0.5)")


class SimPO(Algorithm):
    data_kind = "preference"
    needs_reference = False

    def compute_loss(self, batch):
        chosen, rejected = self.run.pair_logprobs(self.run.policy, batch)["mean"]  # [B] each
        loss, metrics = simpo_loss(chosen, rejected, beta=self.cfg.beta, gamma=self.cfg.gamma,
                                   label_smoothing=self.cfg.label_smoothing)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def evaluate(self, batch):
        out = super().evaluate(batch)
        out["preference_accuracy"] = out["rewards/accuracies"]  # length-normalised log-probs, ties = 0.5
        return out


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("simpo", SimPOConfig, SimPO,
                          "SimPO: reference-free, length-normalised reward with a target margin gamma",
                          paper="Meng et al. 2024, arXiv:2405.14734")]
