"""What a plugin registers for ``alignkit eval``: :class:`EvalMetricSpec` (hook
``alignkit_register_eval_metrics``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

__all__ = ["EvalMetricSpec"]


@dataclass
class EvalMetricSpec:
    """A generation metric of ``alignkit eval``.

    ``fn(prompts, policy, reference) -> dict[str, float]`` gets the held-out prompts (raw: a string
    or chat messages each), the policy's responses and the reference's responses (decoded, without
    the stop token; ``reference`` is ``None`` when the evaluation has no reference model), one per
    prompt. Each returned ``key: value`` is reported as ``<name>/<key>``.
    """

    name: str  #: unique over all plugins; prefixes the reported keys
    fn: Callable[[Sequence, Sequence[str], Optional[Sequence[str]]], dict]
    description: str = ""  #: one line, shown in eval.md
