"""``algo=ppo``: RLHF with PPO, as in InstructGPT (Ouyang et al. 2022) and the
"N implementation details of RLHF with PPO" conventions (Huang et al. 2024).

One training step (one *iteration*) on the step's prompt batches:

1. roll out ``num_samples`` responses per prompt (:mod:`alignkit.rollout`), score them
   (reward model or reward function), subtract the missing-EOS penalty;
2. without gradients, per-token old log-probs, reference log-probs and values on the
   response tokens; ``kl_t`` (k1 or k3) and the shaped rewards
   ``r_t = -kl_coef * kl_t`` (+ score on the last response token; with ``normalize_scores`` the
   score in units of the running score spread, :class:`alignkit.losses.ScoreNormalizer`);
3. GAE (``alignkit.ops.gae``) and advantage whitening (``alignkit.ops.masked_whiten``);
4. ``ppo_epochs`` passes over ``num_minibatches`` shuffled minibatches, each one optimiser
   step of ``pg + vf_coef * vf`` (``alignkit.ops.ppo_loss`` / ``value_loss``);
5. the adaptive KL controller sees the rollout's mean sequence KL.

With a rollout engine that reports its own log-probs of the sampled tokens, the gap to the
trainer's is logged (``rollout/logprob_gap_abs``, ``rollout/tis_weight``); ``tis_cap`` turns on
truncated importance sampling (Yao et al. 2025): each token's advantage is multiplied by
``min(exp(old_logp - engine_logp), tis_cap)`` (:func:`alignkit.losses.truncated_is_weights`).

The value function (``value_model``) is a linear head on the policy's hidden states
(``head``, shares the trunk) or a separate model initialised from the reward model
(``reward``, needs ``reward.model_path``); it is returned by :meth:`PPO.extra_modules`,
so the trainer optimises, clips and schedules its parameters with the policy's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from omegaconf import OmegaConf

from alignkit import AlgorithmSpec, hookimpl, ops
from alignkit.api import (
    check, MetricMeans, minibatches, OnlineAlgorithm, RewardConfig, SamplingConfig, unwrap_model, UserError,
)
from alignkit.losses import (
    AdaptiveKLController, engine_gap_metrics, explained_variance, FixedKLController, kl_per_token,
    masked_whiten_across, ScoreNormalizer, sequence_kl, shape_rewards, truncated_is_weights,
)

from .value import SeparateValueModel, ValueHead, policy_logprobs_and_values


@dataclass
class PPOConfig:
    generation: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    num_samples: int = 1  # responses per prompt in a rollout
    ppo_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 1  # minibatches per pass (each one optimiser step)
    forward_batch_size: int = 16  # rows per no-grad forward when scoring the rollout
    clip_eps: float = 0.2  # policy ratio clip ε
    clip_eps_high: Optional[float] = None  # upper clip (default ε)
    dual_clip: Optional[float] = None  # dual-clip c (> 1) for negative advantages; null = off
    vf_coef: float = 0.1  # value loss weight
    vf_clip: Optional[float] = 0.2  # value clip ε_v around the rollout's values; null = off
    gamma: float = 1.0  # discount
    lam: float = 1.0  # GAE λ (1: Monte Carlo returns minus V_t)
    whiten_advantages: bool = True  # whiten advantages over the rollout's response tokens
    normalize_scores: bool = True  # scores -> (s - running mean) / running std before the KL penalty
    kl_coef: float = 0.05  # initial KL coefficient (per unit of score spread with normalize_scores)
    kl_estimator: str = "k1"  # k1 | k3
    adaptive_kl: bool = True  # Ziegler et al. controller; false = fixed kl_coef
    kl_target: float = 6.0  # target sequence KL (nats) of the adaptive controller
    kl_horizon: float = 10000.0  # controller horizon (in sequences)
    entropy_coef: float = 0.0  # entropy bonus weight
    agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum
    value_model: str = "head"  # head (on the policy) | reward (separate, from reward.model_path)
    tis_cap: Optional[float] = None  # truncated importance sampling cap C on trainer/engine ratios (null = off)
    log_samples: int = 4  # responses written to samples.jsonl per iteration

    def __post_init__(self) -> None:
        check(self, num_samples=">= 1", ppo_epochs=">= 1", num_minibatches=">= 1", forward_batch_size=">= 1",
              clip_eps="> 0", clip_eps_high="> 0", dual_clip="> 1", vf_coef=">= 0", vf_clip="> 0",
              gamma="in [0, 1]", lam="in [0, 1]", kl_coef=">= 0", kl_estimator="one of k1|k3", kl_target="> 0",
              kl_horizon="> 0", entropy_coef=">= 0", agg="one of token-mean|seq-mean-token-mean|seq-mean-token-sum",
              value_model="one of head|reward", tis_cap="> 0", log_samples=">= 0")


class PPO(OnlineAlgorithm):
    needs_reference = True

    def setup(self) -> None:
        super().setup()
        c = self.cfg
        self.kl_ctl = (AdaptiveKLController(c.kl_coef, c.kl_target, c.kl_horizon) if c.adaptive_kl
                       else FixedKLController(c.kl_coef))
        if c.value_model == "head":
            self.value = ValueHead(unwrap_model(self.run.policy).config.hidden_size)
        else:  # "reward": a separate value model initialised from the reward model
            if not c.reward.model_path:
                raise UserError("algo.value_model=reward needs algo.reward.model_path",
                                "set it to an algo=rm run's final/ folder, or use algo.value_model=head")
            self.value = SeparateValueModel(str(c.reward.model_path))
        self.value.to(self.run.device)
        self.score_norm = ScoreNormalizer()

    def extra_modules(self) -> list:
        return [self.value]

    # -- forward passes -------------------------------------------------------------------
    def _policy_and_values(self, ro, idx):
        """``(logp, entropy, values)`` of rows ``idx`` with gradients, ``[n, T-1]``."""
        if isinstance(self.value, ValueHead):
            logp, _, ent, values = policy_logprobs_and_values(
                self.run.policy, self.value, ro.input_ids[idx], ro.attention_mask[idx], ro.labels[idx],
                temperature=self.temperature)
            return logp, ent, values
        logp, _, ent = self.logprobs(self.run.policy, ro, idx, entropy=True)
        return logp, ent, self.value(ro.input_ids[idx], ro.attention_mask[idx])

    @torch.no_grad()
    def _rollout_tensors(self, ro):
        """Old log-probs, reference log-probs and values ``[N, T-1]``, in chunks."""
        olds, refs, vals = [], [], []
        for idx in torch.arange(len(ro)).split(self.cfg.forward_batch_size):
            logp, _, values = self.run.forward(self._policy_and_values, ro, idx)
            olds.append(logp)
            vals.append(values)
            refs.append(self.logprobs(self.run.reference, ro, idx)[0])
        return torch.cat(olds), torch.cat(refs), torch.cat(vals)

    # -- one iteration ----------------------------------------------------------------------
    def optimizer_steps_per_step(self) -> int:
        return self.cfg.ppo_epochs * self.cfg.num_minibatches

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        c = self.cfg
        ro = self.rollout(micro_batches)
        mask = ro.mask.to(self.run.device)  # [N, T-1]
        with self.timer("train"):
            old_logp, ref_logp, old_values = self._rollout_tensors(ro)
            kl = kl_per_token(old_logp, ref_logp, mask, c.kl_estimator)  # [N, T-1]
            kl_coef = self.kl_ctl.value
            scores = self.score_norm(ro.scores, self.run.all_reduce_sum) if c.normalize_scores else ro.scores  # [N]
            rewards = shape_rewards(scores, kl, mask, kl_coef)  # [N, T-1]
            adv, returns = ops.gae(rewards, old_values, mask, gamma=c.gamma, lam=c.lam)
            if c.whiten_advantages:  # over the whole rollout, i.e. over every process's rows
                adv = (ops.masked_whiten(adv, mask) if self.run.num_processes == 1
                       else masked_whiten_across(adv, mask, self.run.all_reduce_sum))
            gap = {}
            if ro.engine_logprobs is not None:
                gap = engine_gap_metrics(old_logp, ro.engine_logprobs.to(old_logp.device), mask, c.tis_cap)
            if c.tis_cap is not None:
                adv = adv * truncated_is_weights(old_logp, self._engine_logprobs(ro).to(old_logp.device), mask,
                                                 c.tis_cap)  # [N, T-1]
            means = MetricMeans()
            for _ in range(c.ppo_epochs):
                for idx in minibatches(len(ro), c.num_minibatches, self.generator):
                    m = mask[idx]
                    logp, ent, values = self.run.forward(self._policy_and_values, ro, idx)
                    pg, st = ops.ppo_loss(logp, old_logp[idx], adv[idx], m, clip_eps=c.clip_eps,
                                          clip_eps_high=c.clip_eps_high, dual_clip=c.dual_clip, entropy=ent,
                                          entropy_coef=c.entropy_coef, agg=c.agg)
                    vf, vst = ops.value_loss(values, old_values[idx], returns[idx], m, clip_eps=c.vf_clip, agg=c.agg)
                    loss = pg + c.vf_coef * vf
                    self.run.backward(loss)
                    step = self.run.optimizer_step()
                    means.add({"loss": loss, "ppo/pg_loss": pg, "ppo/vf_loss": vf,
                               "ppo/clipfrac": st["clipfrac"], "ppo/approx_kl": st["approx_kl"],
                               "ppo/entropy": st["entropy"], "ppo/vf_clipfrac": vst["clipfrac"], **step})
        seq_kls = sequence_kl(kl, mask)  # [N]
        totals = self.run.all_reduce_sum(torch.stack([seq_kls.sum(), seq_kls.new_tensor(float(len(ro)))]).double())
        seq_kl = float(totals[0] / totals[1])  # mean over every process's sequences
        self.kl_ctl.update(seq_kl, int(totals[1]))
        metrics = {
            **self.rollout_metrics(ro),
            "rollout/kl": seq_kl,
            "rollout/kl_coef": kl_coef,
            "rollout/non_score_reward": -kl_coef * seq_kl,
            "ppo/explained_variance": explained_variance(old_values, returns, mask),
            "ppo/returns_mean": float(returns[mask].mean()),
            "ppo/values_mean": float(old_values[mask].mean()),
            **gap,
            **means.result(),
            **self.pop_times(),
        }
        self.write_samples(ro)
        return metrics

    def _engine_logprobs(self, ro) -> torch.Tensor:
        """``ro.engine_logprobs``, or a one-line error naming the rollout engine when it reported none."""
        if ro.engine_logprobs is None:
            engine = OmegaConf.select(self.run.cfg, "rollout.engine", default=None) or "hf"
            raise UserError(f"algo.tis_cap={self.cfg.tis_cap} needs the rollout engine's log-probs of the sampled "
                            f"tokens, but rollout.engine={engine} reports none",
                            "use a rollout.engine that reports them (vllm), or set algo.tis_cap=null")
        return ro.engine_logprobs

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kl_ctl": self.kl_ctl.state_dict(), "value": self.value.state_dict(),
                "score_norm": self.score_norm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])
            self.value.load_state_dict(state["value"])
        if "score_norm" in state:
            self.score_norm.load_state_dict(state["score_norm"])


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("ppo", PPOConfig, PPO, "RLHF with PPO: rollouts, KL-shaped rewards, GAE, clipped "
                          "policy and value losses", paper="Ouyang et al. 2022, arXiv:2203.02155",
                          validate=validate_config)]


def validate_config(cfg: PPOConfig) -> None:
    """Cross-field checks, run when the config is composed."""
    if cfg.value_model == "reward" and not cfg.reward.model_path:
        raise UserError("algo.value_model=reward needs algo.reward.model_path",
                        "set it to an algo=rm run's final/ folder, or use algo.value_model=head")
