"""``alignkit.ranking``: the public helper package of the ranked-list algorithms (PRO, RRHF).

:class:`RankedAlgorithm` trains on ``ranked`` batches (``[B, K, T]``) and evaluates on
held-out ``preference`` pairs. A subclass only implements :meth:`RankedAlgorithm.ranked_loss`,
the pure loss on per-response log-prob statistics.

* Log-probs: the valid responses of the whole batch are flattened to ``[N, T]``
  (``N <= B*K``, list padding dropped) and scored in one forward through
  :func:`alignkit.modeling.sequence_logprobs` (fused lm_head + log-prob op, so no
  ``[N, T, V]`` logits exist), then scattered back to ``[B, K]``.
* Evaluation: ``accuracy`` is the held-out preference accuracy, chosen scored above
  rejected by the policy's *mean* log-prob (:func:`alignkit.metrics.preference_accuracy`);
  ``loss`` is the algorithm's loss on each pair as a 2-list with scores ``[1, 0]``.
* Online lists (``algo.num_samples > 0``): before training, :meth:`build_online_examples`
  samples ``num_samples`` responses per training prompt with the starting policy, scores
  them with ``algo.reward`` (together with the data's own responses unless
  ``include_dataset_responses: false``) and caches them (:mod:`alignkit.ranking.lists`).
  This happens in :meth:`prepare_examples`, which the trainer calls before tokenisation.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from alignkit.algorithm import Algorithm
from alignkit.metrics import preference_accuracy
from alignkit.modeling import sequence_logprobs
from alignkit.ranking.lists import OnlineRankingConfig, build_ranked_online, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

__all__ = ["RankedAlgorithm", "OnlineRankingConfig", "build_ranked_online", "read_jsonl", "write_jsonl"]


class RankedAlgorithm(Algorithm):
    data_kind = "ranked"
    eval_data_kind = "preference"
    needs_reference = False

    # -- the one thing a subclass writes -------------------------------------------------
    def ranked_loss(self, mean: torch.Tensor, total: torch.Tensor, ntokens: torch.Tensor, scores: torch.Tensor,
                    valid: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss of ``[B, K]`` mean / summed log-probs, token counts, scores and validity."""
        raise NotImplementedError

    # -- log-probs -----------------------------------------------------------------------
    def _fused(self) -> bool:
        return bool(self.run.cfg.model.get("fused_logprobs", True))

    def list_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                      valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, sum, ntokens)`` each ``[B, K]`` for ``[B, K, T]`` lists (0 where not valid)."""
        B, K, T = input_ids.shape
        dev = self.run.device
        rows = valid.reshape(-1).to(dev)  # [B*K]
        ids = input_ids.reshape(B * K, T).to(dev)[rows]  # [N, T]
        am = attention_mask.reshape(B * K, T).to(dev)[rows]
        lab = labels.reshape(B * K, T).to(dev)[rows]
        width = int(am.sum(1).max())  # drop columns that are padding in every kept row
        out = sequence_logprobs(self.run.policy, ids[:, :width], am[:, :width], lab[:, :width], fused=self._fused())
        stats = []
        for key in ("mean", "sum", "ntokens"):
            full = torch.zeros(B * K, dtype=out["sum"].dtype, device=dev)
            full[rows] = out[key].to(full.dtype)
            stats.append(full.view(B, K))
        return stats[0], stats[1], stats[2]

    def pair_logprobs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, sum, ntokens)`` each ``[B, 2]`` (chosen, rejected) of a preference batch, one forward."""
        ids = torch.stack([batch["chosen_input_ids"], batch["rejected_input_ids"]], 1)  # [B, 2, T]
        am = torch.stack([batch["chosen_attention_mask"], batch["rejected_attention_mask"]], 1)
        lab = torch.stack([batch["chosen_labels"], batch["rejected_labels"]], 1)
        return self.list_logprobs(ids, am, lab, torch.ones(ids.shape[:2], dtype=torch.bool))

    # -- training and evaluation -------------------------------------------------------------
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        valid = batch["valid"].to(self.run.device)
        mean, total, ntok = self.list_logprobs(batch["input_ids"], batch["attention_mask"], batch["labels"], valid)
        return self.ranked_loss(mean, total, ntok, batch["scores"].to(self.run.device), valid)

    def evaluate(self, batch: dict) -> dict[str, float]:
        if "chosen_input_ids" not in batch:  # a ranked held-out set: just the loss
            return super().evaluate(batch)
        with torch.no_grad():
            mean, total, ntok = self.pair_logprobs(batch)
            B = mean.shape[0]
            scores = torch.tensor([[1.0, 0.0]], device=mean.device).expand(B, 2)
            loss, metrics = self.ranked_loss(mean, total, ntok, scores, torch.ones_like(scores, dtype=torch.bool))
        out = {k: float(v) for k, v in metrics.items()}
        out.update({
            "loss": float(loss),
            "preference_accuracy": preference_accuracy(mean[:, 0], mean[:, 1]),
            "logps/chosen_mean": float(mean[:, 0].mean()),
            "logps/rejected_mean": float(mean[:, 1].mean()),
            "logps/margin_mean": float((mean[:, 0] - mean[:, 1]).mean()),
        })
        return out

    # -- online ranked lists ---------------------------------------------------------------------
    def prepare_examples(self, examples: list[dict], split: str) -> list[dict]:
        """Training examples -> ranked lists sampled online when ``algo.num_samples > 0``
        (held-out examples are left alone). Called by the trainer before tokenisation."""
        if split != "train" or int(self.cfg.num_samples) <= 0:
            return examples
        return self.build_online_examples(examples)

    def build_online_examples(self, examples: list[dict]) -> list[dict]:
        """Ranked examples built by sampling ``algo.num_samples`` responses per prompt of
        ``examples`` (any kind with a ``prompt``) with the current policy and scoring them with
        ``algo.reward``; the examples' own responses come first when
        ``algo.include_dataset_responses``. Cached on disk (see :mod:`alignkit.ranking.lists`)."""
        from alignkit.ranking.lists import build_ranked_online
        from alignkit.rollout.rewards import RewardScorer

        cfg = self.cfg
        scorer = RewardScorer.from_config(cfg.reward, self.run)
        extra = [_responses_of(ex) for ex in examples] if cfg.include_dataset_responses else None
        g = cfg.generation
        sampling = {"max_new_tokens": int(g.max_new_tokens), "temperature": float(g.temperature),
                    "top_k": int(g.top_k), "top_p": float(g.top_p)}
        rows, path, cached = build_ranked_online(
            [ex["prompt"] for ex in examples], self.run.policy, self.run.tokenizer, self.run.cfg.data, scorer,
            k=int(cfg.num_samples), sampling=sampling, seed=int(self.run.cfg.trainer.seed),
            reward_name=scorer.name, extra_responses=extra, references=[ex.get("reference") for ex in examples],
            cache_dir=cfg.cache_dir, batch_size=int(cfg.sampling_batch_size),
            missing_eos_penalty=float(cfg.reward.missing_eos_penalty))
        log.info("%s ranked lists for %d prompts %s %s", "read" if cached else "sampled", len(rows),
                 "from" if cached else "into", path)
        self.run.extra["ranked_cache"] = str(path)
        self.run.extra["ranked_cache_hit"] = cached
        return rows


def _responses_of(example: dict) -> list[str]:
    if "responses" in example:
        return list(example["responses"])
    if "chosen" in example:
        return [example["chosen"], example["rejected"]]
    if "completion" in example:
        return [example["completion"]]
    return []
