"""What scores responses in ``score`` and ``pairs``: a judge model, a reward model or a reward function.

``scorer=judge`` grades with :class:`alignkit.datagen.judge.Judge` (the step's model, or
``judge.model_path``); ``scorer=reward`` uses :class:`alignkit.rollout.RewardScorer`, the
scorer of the online algorithms: ``reward.model_path=<algo=rm run>/final`` or
``reward.function=<registered name>`` (``alignkit list`` shows them).

Every scorer is wrapped by :class:`SafeScorer`: an empty response gets NaN without being
sent to the scorer, and NaN (an empty response, a judge answer that never parsed) is
what callers count as a skip.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from alignkit.config.schema import check
from alignkit.datagen.judge import Judge, JudgeConfig
from alignkit.errors import UserError
from alignkit.rollout.config import RewardConfig

__all__ = ["ScoringConfig", "SafeScorer", "build_scorer"]


@dataclass
class ScoringConfig:
    """Config fields of steps that score responses (mixed into their config dataclass)."""

    scorer: str = "judge"  #: judge (a model grades on a rubric) | reward (reward model or function)
    judge: JudgeConfig = field(default_factory=JudgeConfig)  #: with scorer=judge
    reward: RewardConfig = field(default_factory=RewardConfig)  #: with scorer=reward

    def __post_init__(self) -> None:
        check(self, scorer="one of judge|reward")


class SafeScorer:
    """``scorer(prompts, completions) -> float32 [N]`` with NaN for empty completions (never scored)
    and for whatever the wrapped scorer could not score."""

    def __init__(self, scorer: Any, name: str):
        self.scorer, self.name = scorer, name
        self.answers: list[str | None] = []  #: a judge's answer per completion of the last call (None: not asked)

    def __call__(self, prompts: Sequence, completions: Sequence[str], *, references: Sequence | None = None,
                 **_: Any) -> torch.Tensor:
        out = torch.full((len(completions),), float("nan"), dtype=torch.float32)  # [N]
        keep = [i for i, c in enumerate(completions) if isinstance(c, str) and c.strip()]
        self.answers = [None] * len(completions)
        if keep:
            refs = [references[i] for i in keep] if references is not None else None
            scores = self.scorer([prompts[i] for i in keep], [completions[i] for i in keep], references=refs)
            out[torch.tensor(keep)] = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
            for i, answer in zip(keep, getattr(self.scorer, "answers", [])):
                self.answers[i] = answer
        return out


def _judge(cfg: Any, step: Any, policy: tuple[Any, Any] | None) -> SafeScorer:
    from alignkit.config.schema import ModelConfig

    if cfg.judge.model_path:
        model_cfg = ModelConfig(name="judge", source="hf", path=str(cfg.judge.model_path))
        model, tok = step.load_model(model_cfg, role="judge")
        name = str(cfg.judge.model_path)
    else:
        model, tok = policy if policy is not None else step.load_model()
        name = str(cfg.model.name)
    judge = Judge(model, tok, cfg.judge, step.tokenization(), batch_size=int(cfg.batch_size), name=name)
    return SafeScorer(judge, f"judge:{name}")


def _reward(cfg: Any, step: Any, policy_tokenizer: Any) -> SafeScorer:
    from alignkit.rollout.rewards import RewardScorer, load_reward_model

    r = cfg.reward
    kwargs = dict(r.kwargs or {})
    if r.function:
        if step.registry is None or r.function not in step.registry.reward_functions:
            known = ", ".join(sorted(step.registry.reward_functions)) if step.registry else "(none)"
            raise UserError(f"unknown reward function {r.function!r}", f"choose one of: {known}")
        step.models["reward"] = {"function": str(r.function), "kwargs": kwargs}
        return SafeScorer(RewardScorer(function=step.registry.reward_function(r.function), kwargs=kwargs,
                                       name=str(r.function)), str(r.function))
    if r.model_path:
        from alignkit.models.build import check_model_path

        path = check_model_path(str(r.model_path), "reward.model_path")
        model, tok = load_reward_model(path, step.device())
        step.models["reward"] = {"path": path, "fingerprint": step.fingerprint(model)}
        return SafeScorer(RewardScorer(model=model, tokenizer=tok, data_cfg=step.tokenization(),
                                       batch_size=int(r.batch_size), name=path, policy_tokenizer=policy_tokenizer),
                          path)
    raise UserError("scorer=reward needs a reward model or a reward function",
                    "set reward.model_path=<algo=rm run>/final or reward.function=<name> (alignkit list shows them)")


def build_scorer(cfg: Any, step: Any, policy: tuple[Any, Any] | None = None) -> SafeScorer:
    """The scorer ``cfg.scorer`` names; ``policy`` (model, tokenizer) is reused as the judge when
    ``judge.model_path`` is unset."""
    if cfg.scorer == "judge":
        return _judge(cfg, step, policy)
    return _reward(cfg, step, policy[1] if policy is not None else None)
