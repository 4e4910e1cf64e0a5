"""``OnlineAlgorithm``: what PPO, RAFT, GRPO and RLOO share.

A subclass's config must have ``generation`` (:class:`SamplingConfig`), ``reward``
(:class:`RewardConfig`), ``num_samples`` (responses per prompt) and ``log_samples``
(responses written to ``samples.jsonl`` per iteration); it implements
:meth:`train_step` using :meth:`rollout`, :meth:`logprobs` and :meth:`timer`.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from alignkit.algorithm import Algorithm
from alignkit.losses.ppo import apply_missing_eos_penalty
from alignkit.modeling import token_logprobs
from alignkit.rollout.engine import RolloutEngine, make_engine
from alignkit.rollout.generation import Rollout, concat_prompt_batches, pad_token_id, row_seeds
from alignkit.rollout.rewards import RewardScorer

__all__ = ["OnlineAlgorithm", "minibatches", "MetricMeans"]


class MetricMeans:
    """Running means of metric dicts (values: floats or 0-dim tensors)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            v = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def result(self) -> dict[str, float]:
        return {k: s / self.counts[k] for k, s in self.sums.items()}


def minibatches(n: int, num_minibatches: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` split into ``num_minibatches`` near-equal index tensors."""
    k = max(1, min(int(num_minibatches), n))
    return list(torch.randperm(n, generator=generator).chunk(k))


class OnlineAlgorithm(Algorithm):
    data_kind = "prompt"

    def setup(self) -> None:
        self.scorer = RewardScorer.from_config(self.cfg.reward, self.run)
        self.iteration = 0
        self.times: dict[str, float] = {}
        self.samples_path = self.run.output_dir / "samples.jsonl"
        self.generator = torch.Generator().manual_seed(int(self.run.cfg.trainer.seed))
        self._engine: RolloutEngine | None = None
        self.engine_stale = False  #: the policy changed since the engine last took its weights

    @property
    def engine(self) -> RolloutEngine:
        """The run's rollout engine (``rollout.engine``), built on first use so that it starts from
        the policy's weights as they are then (after a resume, the checkpoint's)."""
        if self._engine is None:
            self._engine = make_engine(self.run.cfg.rollout, self.run)
        return self._engine

    # -- timing --------------------------------------------------------------------------
    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Add the wall time of the block to ``time/<name>`` of this iteration's metrics."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"time/{name}"] = self.times.get(f"time/{name}", 0.0) + time.perf_counter() - t0

    def end_step(self) -> None:
        """The iteration advances after every training step: sampling keys, ``samples.jsonl`` rows and
        checkpoints all see the new value; subclasses do not advance it themselves."""
        self.iteration += 1
        self.engine_stale = True

    def pop_times(self) -> dict[str, float]:
        out, self.times = self.times, {}
        return out

    # -- rollout ---------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        """The sampling temperature, also applied to training log-probs (1 for greedy decoding)."""
        t = self.cfg.generation.temperature
        return t if t > 0 else 1.0

    def _sample(self, batch: dict, num_samples: int, stream: str = "train", attempt: int = 0
                ) -> tuple[Rollout, torch.Tensor]:
        """Generate for a prompt batch with the configured sampling and score: ``(rollout, scores)``.
        Each response's randomness is keyed by (run seed, ``stream``, iteration, [attempt,] prompt
        index, sample), so rollouts do not depend on the number of processes and a resumed run
        samples the same; ``attempt > 0`` draws fresh samples of the same prompts (resampling)."""
        g = self.cfg.generation
        seeds = None
        if "index" in batch:
            key = (int(self.run.cfg.trainer.seed), stream, self.iteration) + ((f"attempt{attempt}",) if attempt else ())
            seeds = row_seeds(*key, index=batch["index"].tolist(), num_samples=num_samples)
        engine = self.engine
        with self.timer("sync_weights"):
            if self.engine_stale:
                engine.sync_weights()
                self.engine_stale = False
        with self.timer("generate"):
            if not engine.keyed_sampling:
                key = (int(self.run.cfg.trainer.seed), stream, self.iteration, attempt, self.run.process_index)
                engine.reseed(row_seeds(*key, index=[0], num_samples=1)[0])
            ro = engine.generate(batch, num_samples=num_samples, sampling=g, seeds=seeds)
        with self.timer("score"):
            raw = self.scorer(ro.prompts, ro.completions, references=ro.references, input_ids=ro.input_ids,
                              attention_mask=ro.attention_mask).to(self.run.device)
        return ro, raw

    def rollout(self, micro_batches: list[dict], num_samples: int | None = None, *, attempt: int = 0) -> Rollout:
        """Generate ``num_samples`` responses for every prompt of the step's micro-batches and
        score them; ``rollout.scores`` holds the scores after the missing-EOS penalty and
        ``self.raw_scores`` the reward's own values. ``attempt`` (0, 1, ...) keys fresh samples
        of the same prompts within one iteration (e.g. to refill groups with no reward spread)."""
        batch = concat_prompt_batches(micro_batches, pad_token_id(self.run.policy, self.run.tokenizer))
        ro, self.raw_scores = self._sample(batch, num_samples or self.cfg.num_samples, attempt=attempt)
        ro.scores = apply_missing_eos_penalty(self.raw_scores, ro.has_eos, self.cfg.reward.missing_eos_penalty)
        return ro

    def rollout_metrics(self, ro: Rollout) -> dict[str, float]:
        raw = self.raw_scores.float()
        return {
            "rollout/score": float(raw.mean()),
            "rollout/score_std": float(raw.std()) if raw.numel() > 1 else 0.0,
            "rollout/score_max": float(raw.max()),
            "rollout/response_length": float(ro.response_lengths.float().mean()),
            "rollout/eos_fraction": float(ro.has_eos.float().mean()),
        }

    def evaluate(self, batch: dict) -> dict[str, float]:
        """Held-out prompts: one sampled response each (the training sampling settings),
        scored by the run's reward: ``eval/score``, ``eval/response_length``, ``eval/eos_fraction``."""
        train_times, self.times = self.times, {}  # evaluation time is not training-iteration time
        ro, scores = self._sample(batch, 1, stream="eval")
        self.times = train_times
        return {"score": float(scores.mean()), "response_length": float(ro.response_lengths.float().mean()),
                "eos_fraction": float(ro.has_eos.float().mean())}

    # -- log-probs -------------------------------------------------------------------------
    def logprobs(self, model: Any, ro: Rollout, index: torch.Tensor | None = None, *, entropy: bool = False):
        """``token_logprobs`` of rows ``index`` (all rows by default) at the sampling temperature;
        ``model`` is the policy or ``self.run.reference``. Returns ``(logp, mask[, entropy])``, ``[n, T-1]``."""
        ids, attn, labels = ro.input_ids, ro.attention_mask, ro.labels
        if index is not None:
            ids, attn, labels = ids[index], attn[index], labels[index]
        if model is self.run.reference:
            return model.token_logprobs(ids, attn, labels, temperature=self.temperature, return_entropy=entropy)
        return token_logprobs(model, ids, attn, labels, temperature=self.temperature, return_entropy=entropy)

    # -- samples ---------------------------------------------------------------------------
    def write_samples(self, ro: Rollout, extra: dict[str, Any] | None = None) -> None:
        """Append the first ``log_samples`` responses of the iteration to ``samples.jsonl``."""
        n = min(int(self.cfg.log_samples), len(ro))
        if n <= 0 or not self.run.is_main_process:
            return
        self.samples_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.samples_path, "a", encoding="utf-8") as f:
            for i in range(n):
                rec = {"iteration": self.iteration, "prompt": ro.prompts[i], "completion": ro.completions[i],
                       "score": float(self.raw_scores[i]), "eos": bool(ro.has_eos[i])}
                rec.update(extra or {})
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.engine_stale = True  # the policy's weights come from the checkpoint
        self.iteration = int(state.get("iteration", 0))
        if "generator" in state:
            self.generator.set_state(state["generator"])
