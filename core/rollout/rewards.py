"""Scoring responses: a registered reward function or a trained reward model.

:class:`RewardScorer` is the one interface online algorithms use::

    scorer = RewardScorer.from_config(cfg.reward, run)     # RewardConfig + RunContext
    scores = scorer(prompts, completions)                  # torch.float32 [N]

* ``function=<name>``: a function registered through the
  ``alignkit_register_reward_functions`` hook, called as
  ``f(prompts, completions, references=..., **kwargs) -> list[float]``.
* ``model_path=<dir>``: the ``final/`` folder of an ``algo=rm`` run, loaded with
  ``AutoModelForSequenceClassification`` and its own tokenizer. Each (prompt,
  completion) pair is tokenised exactly as the data pipeline tokenises an ``sft``
  example (prompt rendered, completion and EOS appended), right padded, and the
  reward is the model's scalar output (read at the last token). Scoring is per
  example: a row's score does not depend on what else is in the batch (up to
  float rounding), and the model is in eval mode under ``torch.no_grad``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

__all__ = ["RewardScorer", "load_reward_model"]


def load_reward_model(path: str, device: Any = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a saved reward model (eval mode, frozen, on ``device``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.to(device).eval().requires_grad_(False)
    return model, tok


class RewardScorer:
    """Scores ``(prompt, completion)`` pairs; see the module docstring."""

    def __init__(self, *, function: Callable[..., list[float]] | None = None, model: Any = None,
                 tokenizer: Any = None, data_cfg: Any = None, kwargs: dict | None = None, batch_size: int = 16,
                 name: str = ""):
        if (function is None) == (model is None):
            raise ValueError("a RewardScorer needs exactly one of a reward function or a reward model")
        self.function = function
        self.model = model
        self.tokenizer = tokenizer
        self.data_cfg = data_cfg
        self.kwargs = dict(kwargs or {})
        self.batch_size = int(batch_size)
        self.name = name

    @classmethod
    def from_config(cls, reward_cfg: Any, run: Any) -> "RewardScorer":
        """Build from an ``algo.reward`` config (:class:`alignkit.rollout.config.RewardConfig`)
        and the :class:`alignkit.RunContext` (registry, device, data config)."""
        kwargs = dict(reward_cfg.kwargs or {})
        if reward_cfg.function:
            return cls(function=run.reward_function(reward_cfg.function), kwargs=kwargs,
                       name=str(reward_cfg.function))
        if reward_cfg.model_path:
            model, tok = load_reward_model(str(reward_cfg.model_path), run.device)
            return cls(model=model, tokenizer=tok, data_cfg=run.cfg.data, batch_size=reward_cfg.batch_size,
                       name=str(reward_cfg.model_path))
        raise ValueError("set algo.reward.function=<registered name> or algo.reward.model_path=<rm run>/final")

    def __call__(self, prompts: Sequence, completions: Sequence[str], *,
                 references: Sequence | None = None) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if self.function is not None:
            out = self.function(list(prompts), list(completions), references=references, **self.kwargs)
            out = [float(x) for x in out]
            if len(out) != len(completions):
                raise ValueError(f"reward function {self.name!r} returned {len(out)} scores for {len(completions)} completions")
            return torch.tensor(out, dtype=torch.float32)
        return self._score_with_model(prompts, completions)

    @torch.no_grad()
    def _score_with_model(self, prompts: Sequence, completions: Sequence[str]) -> torch.Tensor:
        from alignkit.data.collate import collate
        from alignkit.data.tokenize import tokenize_example

        device = next(self.model.parameters()).device
        scores = []
        for start in range(0, len(completions), self.batch_size):
            feats = []
            for p, c in zip(prompts[start:start + self.batch_size], completions[start:start + self.batch_size]):
                f = tokenize_example({"prompt": p, "completion": c}, "sft", self.tokenizer, self.data_cfg)
                if f is None:
                    raise ValueError(f"reward model could not tokenise a completion (prompt {str(p)[:60]!r})")
                feats.append(f)
            batch = collate(feats, "sft", self.tokenizer)
            out = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            scores.append(out.logits[:, 0].float().cpu())
        return torch.cat(scores)
