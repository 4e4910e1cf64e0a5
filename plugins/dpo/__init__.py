"""DPO and variants (sigmoid / conservative, IPO, hinge, robust, reference-free)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit import hookimpl
from alignkit.api import Algorithm, AlgorithmSpec, check
from alignkit.losses import dpo_loss, DPO_LOSS_TYPES as LOSS_TYPES


@dataclass
class DPOConfig:
    beta: float = 0.1  # higher = stay closer to the reference
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge | robust
    label_smoothing: float = 0.0  # ε: assumed label-noise rate (sigmoid = conservative DPO, robust)
    reference_free: bool = False  # drop the reference terms

    def __post_init__(self) -> None:
        check(self, beta="> 0", loss_type="one of " + "|".join(LOSS_TYPES), label_smoothing="in [0, 0.5)")


class DPO(Algorithm):
    data_kind = "preference"
    needs_reference = True

    def setup(self):
        if self.cfg.loss_type not in LOSS_TYPES:
            raise ValueError(f"algo.loss_type must be one of {LOSS_TYPES}, got {self.cfg.loss_type!r}")

    def _logps(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen and rejected sequence log-probs ``[B]``: sums, or means for IPO."""
        return self.run.pair_logprobs(model, batch)["mean" if self.cfg.loss_type == "ipo" else "sum"]

    def compute_loss(self, batch):
        pol_c, pol_r = self._logps(self.run.policy, batch)
        if self.cfg.reference_free:
            ref_c = ref_r = None
        else:
            ref_c, ref_r = self._logps(self.run.reference, batch)
        loss, metrics = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=self.cfg.beta, loss_type=self.cfg.loss_type,
                                 label_smoothing=self.cfg.label_smoothing)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def evaluate(self, batch):
        out = super().evaluate(batch)
        out["preference_accuracy"] = out["rewards/accuracies"]  # implicit reward, ties = 0.5
        return out


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("dpo", DPOConfig, DPO,
                          "direct preference optimisation (loss_type: sigmoid, ipo, hinge, robust)",
                          "Rafailov et al. 2023; IPO: Azar et al. 2023")]
