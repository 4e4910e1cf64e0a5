"""SFT: token-mean negative log-likelihood of the response tokens."""
from __future__ import annotations

from dataclasses import dataclass

from alignkit import hookimpl
from alignkit.api import Algorithm, AlgorithmSpec, token_logprobs
from alignkit.losses import sft_loss


@dataclass
class SFTConfig:
    pass


class SFT(Algorithm):
    data_kind = "sft"

    def compute_loss(self, batch):
        logp, mask = token_logprobs(self.run.policy, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                    fused=self.run.cfg.model.fused_logprobs)  # [B, T-1] each
        loss, metrics = sft_loss(logp, mask)
        return loss, {"loss": loss.detach(), "ppl": metrics["nll"].exp()}


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("sft", SFTConfig, SFT, "supervised fine-tuning on response tokens",
                          "Ouyang et al. 2022 (InstructGPT), step 1")]
