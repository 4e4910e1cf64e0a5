"""DPO-Positive (DPOP; Pal et al. 2024, "Smaug", arXiv:2402.13228).

DPO only asks the chosen response to gain on the rejected one relative to the reference; it
may do so by lowering both, the chosen one included. DPOP adds a penalty whenever the policy's
log-prob of the chosen response falls below the reference's::

    h    = β · [ (log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))
                 - λ · max(0, log π_ref(y_c) - log π(y_c)) ]
    loss = -log σ(h)

with sequence log-probs (sums over response tokens). λ = 0 is plain DPO.

``eval/preference_accuracy``: the fraction of held-out pairs whose chosen response has the
higher implicit reward ``β · (log π - log π_ref)`` (ties count half). Policy = reference at
step 0, so every implicit reward is 0 and the accuracy starts at exactly 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignkit.api import Algorithm, AlgorithmSpec, check, preference_accuracy


@dataclass
class DPOPConfig:
    beta: float = 0.1  # strength of the KL constraint: scale of the implicit reward
    lam: float = 5.0  # weight of the penalty for lowering the chosen response's log-prob (0 = DPO)

    def __post_init__(self) -> None:
        check(self, beta="> 0", lam=">= 0")


def dpop_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
              ref_rejected: torch.Tensor, beta: float, lam: float) -> tuple[torch.Tensor, dict]:
    """Mean DPOP loss of sequence log-probs ``[B]`` each; ``(loss, metrics)``."""
    chosen = policy_chosen - ref_chosen  # [B] log-ratio of the chosen response
    rejected = policy_rejected - ref_rejected  # [B]
    penalty = (ref_chosen - policy_chosen).clamp(min=0)  # [B] how far the chosen log-prob fell
    h = beta * (chosen - rejected - lam * penalty)  # [B]
    loss = -F.logsigmoid(h).mean()
    r_c, r_r = (beta * chosen).detach(), (beta * rejected).detach()
    return loss, {"rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
                  "rewards/margins": (r_c - r_r).mean(), "rewards/accuracies": preference_accuracy(r_c, r_r),
                  "dpop/penalty": penalty.detach().mean()}


class DPOP(Algorithm):
    data_kind = "preference"
    needs_reference = True

    def compute_loss(self, batch):
        pc, pr = self.run.pair_logprobs(self.run.policy, batch)["sum"]  # [B] each; honours model.fused_logprobs
        with torch.no_grad():
            rc, rr = self.run.pair_logprobs(self.run.reference, batch)["sum"]  # [B] each
        loss, metrics = dpop_loss(pc, pr, rc, rr, beta=self.cfg.beta, lam=self.cfg.lam)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def evaluate(self, batch):
        out = super().evaluate(batch)  # compute_loss under no_grad; adds "loss"
        out["preference_accuracy"] = out["rewards/accuracies"]  # the metric every preference method reports
        return out


SPEC = AlgorithmSpec("dpop", DPOPConfig, DPOP,
                     "DPO-Positive: DPO plus a penalty for lowering the chosen response's log-prob",
                     paper="Pal et al. 2024, arXiv:2402.13228")
