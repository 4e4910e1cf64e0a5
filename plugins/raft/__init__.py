"""``algo=raft``: reward-ranked fine-tuning (Dong et al. 2023).

Each iteration samples ``num_samples`` (K) responses per prompt, scores them, keeps the
best response of each prompt (``selection: local``, default) or the top fraction
``alpha`` of all samples (``selection: global``), then fine-tunes on the kept
(prompt, response) pairs with the prompt masked: token-mean NLL over response tokens
(EOS included), ``sft_epochs`` passes of ``num_minibatches`` optimiser steps.
``K = round(1 / alpha)`` when only ``alpha`` is given; ``alpha = 1 / K`` when only K is.
KL to the reference on the sampled responses is reported (``rollout/kl``) for
monitoring; it is not part of the objective.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from alignkit import AlgorithmSpec, hookimpl
from alignkit.losses import kl_per_token, sequence_kl, sft_loss
from alignkit.api import check, MetricMeans, minibatches, OnlineAlgorithm, RewardConfig, SamplingConfig


@dataclass
class RAFTConfig:
    generation: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    num_samples: Optional[int] = None  # K responses per prompt (default round(1/alpha), or 4)
    selection: str = "local"  # local: best of K per prompt | global: top alpha of all samples
    alpha: Optional[float] = None  # kept fraction for global selection (default 1/K)
    sft_epochs: int = 1  # passes over the kept samples per iteration
    num_minibatches: int = 1  # minibatches per pass (each one optimiser step)
    forward_batch_size: int = 16  # rows per no-grad forward (KL metric)
    track_kl: bool = True  # compute KL to the reference on the samples (a metric only)
    log_samples: int = 4  # responses written to samples.jsonl per iteration

    def __post_init__(self) -> None:
        check(self, num_samples=">= 1", selection="one of local|global", alpha="in (0, 1]", sft_epochs=">= 1",
              num_minibatches=">= 1", forward_batch_size=">= 1", log_samples=">= 0")


def raft_select(scores: torch.Tensor, group_size: int, selection: str = "local",
                alpha: float | None = None) -> torch.Tensor:
    """Indices (ascending) of the kept samples of ``scores [N]`` (groups of ``group_size`` consecutive rows).

    ``local``: the best of each group (first on ties). ``global``: the ``max(1, round(alpha * N))``
    best overall (``alpha`` default ``1 / group_size``). Example: scores ``[1, 3, 2, 0]``, K = 2:
    local keeps ``[1, 2]``; global with alpha 0.25 keeps ``[1]``.
    """
    K, N = int(group_size), scores.numel()
    if selection == "local":
        best = scores.reshape(-1, K).argmax(1)
        return best + torch.arange(0, N, K, device=scores.device)
    if selection == "global":
        n = max(1, round((alpha if alpha is not None else 1.0 / K) * N))
        return scores.topk(n).indices.sort().values
    raise ValueError(f"raft selection must be local or global, got {selection!r}")


class RAFT(OnlineAlgorithm):
    needs_reference = True  # for the KL metric (track_kl)

    def setup(self) -> None:
        super().setup()
        c = self.cfg
        if c.num_samples is not None:
            self.k = int(c.num_samples)
        elif c.alpha:
            self.k = max(1, round(1.0 / c.alpha))
        else:
            self.k = 4
        if c.selection == "local" and self.k < 2:
            raise ValueError("RAFT with local selection needs num_samples >= 2")

    @torch.no_grad()
    def _kl(self, ro) -> float:
        seq = []
        for idx in torch.arange(len(ro)).split(self.cfg.forward_batch_size):
            logp, m = self.run.forward(self.logprobs, self.run.policy, ro, idx)
            ref, _ = self.logprobs(self.run.reference, ro, idx)
            seq.append(sequence_kl(kl_per_token(logp, ref, m, "k1"), m))
        return float(torch.cat(seq).mean())

    def optimizer_steps_per_step(self) -> int:
        return self.cfg.sft_epochs * self.cfg.num_minibatches

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        c = self.cfg
        ro = self.rollout(micro_batches, self.k)
        keep = raft_select(ro.scores, self.k, c.selection, c.alpha)
        kept = ro.select(keep.cpu())
        means = MetricMeans()
        with self.timer("train"):
            kl = self._kl(ro) if c.track_kl else float("nan")
            for _ in range(c.sft_epochs):
                for idx in minibatches(len(kept), c.num_minibatches, self.generator):
                    logp, m = self.run.forward(self.logprobs, self.run.policy, kept, idx)
                    loss, _ = sft_loss(logp, m)  # token-mean NLL of the kept responses
                    self.run.backward(loss)
                    step = self.run.optimizer_step()
                    means.add({"loss": loss, **step})
        metrics = {**self.rollout_metrics(ro), "rollout/kl": kl,
                   "raft/kept_score": float(self.raw_scores[keep].mean()),
                   "raft/kept": float(len(kept)), **means.result(), **self.pop_times()}
        self.write_samples(ro)
        return metrics


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("raft", RAFTConfig, RAFT, "reward-ranked fine-tuning: best-of-K (or global top-alpha) "
                          "samples, then SFT on them", paper="Dong et al. 2023, arXiv:2304.06767")]
