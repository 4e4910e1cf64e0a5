"""Chain-of-thought for the data steps: prompts that ask for reasoning, then a final answer on a
line of its own, and the extraction of that answer into its own field.

:func:`extract_answer` splits a response into ``(reasoning, answer)``. The answer is, in this order:

1. the content of the last ``\\boxed{...}`` (the math convention);
2. the rest of the last line that starts with ``Answer:`` / ``Final answer:`` (case, ``**`` and
   ``#`` aside; ``The final answer is ...`` too), up to the line's end (a closing period dropped).

The reasoning is the text before that line (before the box's line). No such line: ``None``
(the caller counts it), never guessed from the last number.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["extract_answer", "cot_prompt"]

_LABEL = re.compile(r"^[ \t>*#_-]*(?:the\s+)?(?:final\s+)?answer(?:[*_]*\s*[:：]|\s+is\b\s*[:：]?)[*_]*\s*"
                    r"(?P<answer>\S.*?)[*_ \t.]*$", re.IGNORECASE | re.MULTILINE)
_BOXED = re.compile(r"\\boxed\{")


def _last_boxed(text: str) -> tuple[int, str] | None:
    """(start, content) of the last ``\\boxed{...}`` with balanced braces."""
    starts = [m.start() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return start, text[start + len("\\boxed{"):i - 1].strip()
    return None


def extract_answer(text: str) -> tuple[str, str | None]:
    """``(reasoning, final answer or None)`` of a chain-of-thought response (see the module docstring)."""
    boxed = _last_boxed(text)
    if boxed is not None and boxed[1]:
        line_start = text.rfind("\n", 0, boxed[0]) + 1
        return text[:line_start].strip(), boxed[1]
    labelled = list(_LABEL.finditer(text))
    if labelled:
        last = labelled[-1]
        return text[:last.start()].strip(), last.group("answer").strip()
    return text.strip(), None


def cot_prompt(prompt: Any, suffix: str) -> Any:
    """``prompt`` with ``suffix`` appended: to the string, or to the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt + suffix
    messages = [dict(m) for m in prompt]
    last_user = max((k for k, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return messages
    messages[last_user]["content"] = str(messages[last_user]["content"]) + suffix
    return messages
