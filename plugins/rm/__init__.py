"""Reward model: a scalar head trained with the Bradley–Terry loss on preference pairs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit import hookimpl
from alignkit.api import Algorithm, AlgorithmSpec, check, preference_accuracy
from alignkit.losses import bradley_terry_loss


@dataclass
class RewardModelConfig:
    center_rewards: float = 0.0  # c in + c * mean((r_c + r_r)^2): keeps rewards near 0
    use_margin: bool = True  # subtract the data's margin (when it has one) inside the sigmoid

    def __post_init__(self) -> None:
        check(self, center_rewards=">= 0")


class RewardModel(Algorithm):
    data_kind = "preference"
    model_kind = "reward"

    def rewards(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run.pair_rewards(self.run.policy, batch)  # [B] each

    def compute_loss(self, batch):
        r_c, r_r = self.rewards(batch)  # [B] each
        margin = batch["margin"] if self.cfg.use_margin else None
        loss, metrics = bradley_terry_loss(r_c, r_r, margin, self.cfg.center_rewards)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def evaluate(self, batch):
        out = super().evaluate(batch)
        r_c, r_r = self.rewards(batch)
        out["preference_accuracy"] = preference_accuracy(r_c, r_r)
        return out


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("rm", RewardModelConfig, RewardModel,
                          "Bradley-Terry reward model (scalar head, reward at the last token)",
                          "Ouyang et al. 2022 (InstructGPT), step 2")]
