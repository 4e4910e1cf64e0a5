"""Config dataclasses shared by the online algorithms (nested as ``algo.generation`` and ``algo.reward``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from alignkit.config.schema import check

__all__ = ["SamplingConfig", "RewardConfig", "sampling_kwargs"]


@dataclass
class SamplingConfig:
    max_new_tokens: int = 32  #: response length cap; a response without EOS by then is "truncated"
    temperature: float = 1.0  #: sampling temperature; <= 0 means greedy
    top_k: int = 0  #: keep the k most likely tokens (0 = off)
    top_p: float = 1.0  #: nucleus sampling mass (1 = off)

    def __post_init__(self) -> None:
        check(self, max_new_tokens=">= 1", temperature=">= 0", top_k=">= 0", top_p="in (0, 1]")



def sampling_kwargs(s: Any) -> dict:
    """A :class:`SamplingConfig` (or its config node) as keyword arguments of ``generate``."""
    return {"max_new_tokens": int(s.max_new_tokens), "temperature": float(s.temperature), "top_k": int(s.top_k),
            "top_p": float(s.top_p)}


@dataclass
class RewardConfig:
    function: Optional[str] = None  #: name of a reward function registered by a plugin
    model_path: Optional[str] = None  #: an ``algo=rm`` run's ``final/`` folder (used when ``function`` is unset)
    #: extra keyword arguments for the reward function; add keys with `+algo.reward.kwargs.char=a`
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16  #: reward-model scoring batch size
    missing_eos_penalty: float = 0.0  #: subtracted from the score of a response that never emitted EOS

    def __post_init__(self) -> None:
        check(self, batch_size=">= 1")
