"""A reward function: how much of the data's reference response a completion covers."""
from __future__ import annotations

import re
from typing import Optional, Sequence

_WORD = re.compile(r"[a-z0-9']+")


def word_overlap(prompts: Sequence, completions: Sequence[str], *, references: Optional[Sequence] = None,
                 empty_score: float = 0.0) -> list[float]:
    """Share of the reference response's distinct words (lower-cased) found in the completion,
    in [0, 1]; ``empty_score`` when the prompt has no reference (``references`` is None, or its
    entry is None or has no words).

    alignkit passes ``references=`` (one entry per prompt) because the function names that
    parameter; ``empty_score`` comes from ``+algo.reward.kwargs.empty_score=...``."""
    refs = list(references) if references is not None else [None] * len(completions)
    out = []
    for completion, ref in zip(completions, refs):
        want = set(_WORD.findall(ref.lower())) if ref else set()
        if not want:
            out.append(float(empty_score))
            continue
        have = set(_WORD.findall(completion.lower()))
        out.append(len(want & have) / len(want))
    return out
