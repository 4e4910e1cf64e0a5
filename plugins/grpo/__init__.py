"""``algo=grpo`` and ``algo=rloo``: group-relative policy optimisation without a value model.

Both sample a group of ``num_samples`` responses per prompt and turn the group's
scores into one advantage per response, broadcast over its tokens; the policy loss is
the clipped surrogate of ``alignkit.ops.ppo_loss`` (with one epoch and one minibatch
the ratio is 1 and it is plain REINFORCE with a baseline).

* GRPO (Shao et al. 2024, DeepSeekMath): ``A_i = (s_i - mean_g) / (std_g + 1e-4)``
  (``scale_rewards: false`` drops the std, as in Dr. GRPO); KL to the reference as a
  loss term ``beta * k3`` per token (``beta: 0`` skips the reference in the loss).
* RLOO (Ahmadian et al. 2024): the sequence reward ``s_i - kl_coef * sum_t k1_t`` with
  the leave-one-out baseline ``A_i = R_i - mean_{j != i} R_j``; with ``normalize_scores`` the
  score ``s_i`` is first put in units of the running score spread (as in PPO).

KL to the reference (k1, summed over the response, mean over sequences) is reported
as ``rollout/kl`` by both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from alignkit import AlgorithmSpec, hookimpl, ops
from alignkit.losses import group_advantages, kl_per_token, ScoreNormalizer, sequence_kl
from alignkit.api import check, MetricMeans, minibatches, OnlineAlgorithm, RewardConfig, SamplingConfig


@dataclass
class GroupConfig:
    generation: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    num_samples: int = 4  # group size: responses per prompt (>= 2)
    epochs: int = 1  # passes over each rollout
    num_minibatches: int = 1  # minibatches per pass (each one optimiser step)
    forward_batch_size: int = 16  # rows per no-grad forward
    clip_eps: float = 0.2  # policy ratio clip ε
    clip_eps_high: Optional[float] = None  # upper clip (default ε; DAPO's clip-higher uses e.g. 0.28)
    entropy_coef: float = 0.0  # entropy bonus weight
    agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum
    log_samples: int = 4  # responses written to samples.jsonl per iteration

    def __post_init__(self) -> None:
        check(self, num_samples=">= 2", epochs=">= 1", num_minibatches=">= 1", forward_batch_size=">= 1",
              clip_eps="> 0", clip_eps_high="> 0", entropy_coef=">= 0",
              agg="one of token-mean|seq-mean-token-mean|seq-mean-token-sum", log_samples=">= 0")


@dataclass
class GRPOConfig(GroupConfig):
    beta: float = 0.04  # weight of the per-token k3 KL to the reference in the loss
    scale_rewards: bool = True  # divide by the group's std (false: Dr. GRPO)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, beta=">= 0")


@dataclass
class RLOOConfig(GroupConfig):
    kl_coef: float = 0.05  # sequence-level k1 KL penalty subtracted from the score
    normalize_scores: bool = True  # scores -> (s - running mean) / running std before the KL penalty

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, kl_coef=">= 0")


class GroupRelative(OnlineAlgorithm):
    """Shared loop; subclasses define :meth:`advantages` and :attr:`loss_kl_coef`."""

    needs_reference = True
    loss_kl_coef = 0.0

    def advantages(self, scores: torch.Tensor, seq_kl: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _chunked(self, model, ro) -> torch.Tensor:
        return torch.cat([self.run.forward(self.logprobs, model, ro, idx)[0]
                          for idx in torch.arange(len(ro)).split(self.cfg.forward_batch_size)])

    def optimizer_steps_per_step(self) -> int:
        return self.cfg.epochs * self.cfg.num_minibatches

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        c = self.cfg
        ro = self.rollout(micro_batches)
        mask = ro.mask.to(self.run.device)  # [N, T-1]
        single_pass = c.epochs == 1 and c.num_minibatches == 1
        with self.timer("train"):
            ref = self._chunked(self.run.reference, ro)  # [N, T-1]
            if single_pass:  # the training forward doubles as the "old" forward: ratio = 1
                logp_all, _, ent_all = self.run.forward(self.logprobs, self.run.policy, ro, entropy=True)
                old = logp_all.detach()
            else:
                old = self._chunked(self.run.policy, ro)
            seq_kl = sequence_kl(kl_per_token(old, ref, mask, "k1"), mask)  # [N]
            adv_seq = self.advantages(ro.scores, seq_kl)  # [N]
            adv = adv_seq.unsqueeze(1).expand_as(old).contiguous()  # [N, T-1]
            means = MetricMeans()
            for _ in range(c.epochs):
                for idx in minibatches(len(ro), c.num_minibatches, self.generator):
                    if single_pass:
                        logp, ent = logp_all[idx], ent_all[idx]
                    else:
                        logp, _, ent = self.run.forward(self.logprobs, self.run.policy, ro, idx, entropy=True)
                    loss, st = ops.ppo_loss(
                        logp, old[idx], adv[idx], mask[idx], clip_eps=c.clip_eps, clip_eps_high=c.clip_eps_high,
                        ref_logprobs=ref[idx] if self.loss_kl_coef > 0 else None, kl_coef=self.loss_kl_coef,
                        kl_estimator="k3", entropy=ent, entropy_coef=c.entropy_coef, agg=c.agg)
                    self.run.backward(loss)
                    step = self.run.optimizer_step()
                    means.add({"loss": loss, "pg/clipfrac": st["clipfrac"], "pg/approx_kl": st["approx_kl"],
                               "pg/entropy": st["entropy"], "pg/kl_k3": st["kl"], **step})
        metrics = {**self.rollout_metrics(ro), "rollout/kl": float(seq_kl.mean()),
                   "pg/advantage_abs": float(adv_seq.abs().mean()), **means.result(), **self.pop_times()}
        self.write_samples(ro)
        self.iteration += 1
        return metrics


class GRPO(GroupRelative):
    def setup(self) -> None:
        super().setup()
        self.loss_kl_coef = float(self.cfg.beta)

    def advantages(self, scores, seq_kl):
        return group_advantages(scores, self.cfg.num_samples, "grpo", scale_by_std=self.cfg.scale_rewards)


class RLOO(GroupRelative):
    def setup(self) -> None:
        super().setup()
        self.score_norm = ScoreNormalizer()

    def advantages(self, scores, seq_kl):  # [N], [N] -> [N]
        if self.cfg.normalize_scores:
            scores = self.score_norm(scores, self.run.all_reduce_sum)
        return group_advantages(scores - self.cfg.kl_coef * seq_kl, self.cfg.num_samples, "rloo")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "score_norm": self.score_norm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "score_norm" in state:
            self.score_norm.load_state_dict(state["score_norm"])


@hookimpl
def alignkit_register_algorithms():
    return [
        AlgorithmSpec("grpo", GRPOConfig, GRPO, "group-relative policy optimisation: group-normalised advantages, "
                      "no value model", paper="Shao et al. 2024, arXiv:2402.03300"),
        AlgorithmSpec("rloo", RLOOConfig, RLOO, "REINFORCE leave-one-out: KL-penalised sequence rewards with a "
                      "leave-one-out baseline", paper="Ahmadian et al. 2024, arXiv:2402.14740"),
    ]
