"""Scoring responses: a registered reward function or a trained reward model.

:class:`RewardScorer` is the one interface online algorithms use::

    scorer = RewardScorer.from_config(cfg.reward, run)     # RewardConfig + RunContext
    scores = scorer(prompts, completions)                  # torch.float32 [N]

* ``function=<name>``: a function registered through the
  ``alignkit_register_reward_functions`` hook, called as
  ``f(prompts, completions, **kwargs) -> list[float]`` with ``kwargs`` from
  ``algo.reward.kwargs``, plus ``references=`` (the data's reference responses or
  ``None`` per prompt) when the function names a ``references`` parameter or takes
  ``**kwargs``. :func:`check_reward_function` checks the configured kwargs against the
  function's signature when the config is composed.
* ``model_path=<dir>``: the ``final/`` folder of an ``algo=rm`` run, loaded with
  ``AutoModelForSequenceClassification`` and its own tokenizer; the reward is
  :func:`alignkit.modeling.reward_scores` (scalar head at the last non-padding
  token), as in ``algo=rm`` training. When the caller passes the sampled token ids
  (``input_ids`` / ``attention_mask``, as a :class:`~alignkit.rollout.Rollout` has
  them) and the reward model's vocabulary equals the policy's, those ids are scored
  directly: prompt ids + response ids + EOS is exactly the layout the reward model
  was trained on. Otherwise each (prompt, completion) pair is tokenised as the data
  pipeline tokenises an ``sft`` example (``prompt`` taken as a raw prompt).
  Scoring is per example: a row's score does not depend on what else is in the
  batch (up to float rounding); the model is frozen, in eval mode, under ``no_grad``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

__all__ = ["RewardScorer", "load_reward_model", "check_reward_function"]


def check_reward_function(fn: Callable, name: str, kwargs: dict) -> bool:
    """Check ``algo.reward.kwargs`` against ``fn``'s signature; return whether ``fn`` takes
    ``references``. Raises a one-line :class:`alignkit.errors.UserError` for a keyword the
    function does not take (with the closest valid name) or a required one that is missing."""
    import difflib
    import inspect

    from alignkit.errors import UserError

    params = inspect.signature(fn).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    positional = [p for p in params.values() if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                           inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()):
        raise UserError(f"reward function {name!r} must take (prompts, completions, ...)",
                        "give it two positional parameters (see docs/writing-plugins.md)")
    named = [p.name for p in params.values() if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                           inspect.Parameter.POSITIONAL_OR_KEYWORD)][2:]
    if not var_kw:
        for key in kwargs:
            if key not in named:
                close = difflib.get_close_matches(key, named, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UserError(f"reward function {name!r} takes no argument {key!r}",
                                f"{hint}its arguments: {', '.join(named) or '(none)'}")
    for p in list(params.values())[2:]:
        if p.default is inspect.Parameter.empty and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                                inspect.Parameter.POSITIONAL_OR_KEYWORD) \
                and p.name not in kwargs and p.name != "references":
            raise UserError(f"reward function {name!r} needs the argument {p.name!r}",
                            f"set +algo.reward.kwargs.{p.name}=<value>")
    return var_kw or "references" in params


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
                 name: str = "", policy_tokenizer: Any = None):
        if (function is None) == (model is None):
            raise ValueError("a RewardScorer needs exactly one of a reward function or a reward model")
        self.function = function
        self.model = model
        self.tokenizer = tokenizer
        self.data_cfg = data_cfg
        self.kwargs = dict(kwargs or {})
        self.batch_size = int(batch_size)
        self.name = name
        #: whether the reward function takes ``references=`` (see :func:`check_reward_function`)
        self.pass_references = check_reward_function(function, name, self.kwargs) if function is not None else False
        #: whether rollout token ids can be scored as they are (same vocabulary as the policy)
        self.shares_tokenizer = (model is not None and policy_tokenizer is not None
                                 and tokenizer.get_vocab() == policy_tokenizer.get_vocab())

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
                       name=str(reward_cfg.model_path), policy_tokenizer=run.tokenizer)
        raise ValueError("set algo.reward.function=<registered name> or algo.reward.model_path=<rm run>/final")

    def __call__(self, prompts: Sequence, completions: Sequence[str], *, references: Sequence | None = None,
                 input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[N]`` (float32, CPU). ``input_ids`` / ``attention_mask`` ``[N, T]`` (right or left
        padded prompt+response ids of the policy) are optional and only used by a reward model
        sharing the policy's vocabulary."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if self.function is not None:
            extra = {"references": references} if self.pass_references else {}
            out = self.function(list(prompts), list(completions), **extra, **self.kwargs)
            out = [float(x) for x in out]
            if len(out) != len(completions):
                raise ValueError(f"reward function {self.name!r} returned {len(out)} scores for {len(completions)} completions")
            return torch.tensor(out, dtype=torch.float32)
        if input_ids is not None and self.shares_tokenizer:
            return self._score_ids(input_ids, attention_mask)
        return self._score_text(prompts, completions)

    @torch.no_grad()
    def _score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from alignkit.modeling import reward_scores

        device = next(self.model.parameters()).device
        out = []
        for start in range(0, input_ids.shape[0], self.batch_size):
            ids = input_ids[start:start + self.batch_size].to(device)
            mask = attention_mask[start:start + self.batch_size].to(device)
            out.append(reward_scores(self.model, ids, mask).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def _score_text(self, prompts: Sequence, completions: Sequence[str]) -> torch.Tensor:
        from alignkit.data.collate import collate
        from alignkit.data.tokenize import tokenize_example

        feats = []
        for p, c in zip(prompts, completions):
            f = tokenize_example({"prompt": p, "completion": c}, "sft", self.tokenizer, self.data_cfg,
                                 drop_unusable=False)
            if f is None:
                raise ValueError(f"reward model could not tokenise a completion (prompt {str(p)[:60]!r})")
            feats.append(f)
        batch = collate(feats, "sft", self.tokenizer)
        return self._score_ids(batch["input_ids"], batch["attention_mask"])
