"""Verifiable rewards: a completion's final answer checked against the prompt's reference answer.

Each function is ``f(prompts, completions, *, references, ...) -> list[float]`` and scores 1.0 for a
correct answer and 0.0 otherwise; ``format_reward`` (default 0) is the score of a *wrong* answer that
could at least be read (so scores stay in [0, 1]). Every prompt needs a reference: a row whose
reference is None is a one-line :class:`alignkit.errors.UserError` naming the function, never a
silent 0.

**The answer of a text** (:func:`extract_answer`, used for completions and references alike):

1. the content of the last ``\\boxed{...}`` (braces balanced; ``\\fbox`` too);
2. else the text after the last ``####``, ``answer is`` or ``answer:`` (case-insensitive, so
   ``The final answer is``, ``**Answer:**`` count; the rest of that line, or the next non-empty
   line when the marker ends its line);
3. else, with ``fallback="number"`` (``numeric_match``), the last number of the text; with
   ``fallback="whole"`` (``exact_match``, ``math_verify``), the whole text.

Surrounding whitespace, ``$`` and Markdown emphasis are trimmed, and a trailing period dropped.

* ``exact_match`` -- the two answers equal after :func:`normalize_answer`: lower case, runs of
  whitespace as one space, surrounding punctuation (``.,;:!?"'`` and backticks) removed.
  ``format_reward`` goes to a wrong answer given in ``\\boxed{}`` or after a marker.
* ``numeric_match`` -- the answers' numbers (:func:`parse_number`: the answer itself when it is a
  number, else its last number; ``1,000`` = ``1000`` = ``1000.0``, ``3/4`` = ``0.75``,
  ``\\frac{3}{4}`` too) equal as exact rationals, or within ``rel_tol`` of each other
  (``|a - b| <= rel_tol * max(|a|, |b|)``) when ``rel_tol > 0``. ``format_reward`` goes to a
  wrong answer that holds a number. A reference without a number is an error.
* ``math_verify`` -- Hugging Face's ``math-verify`` (``parse`` then ``verify(gold, answer)``) on the
  two answers: LaTeX and plain expressions compared symbolically (``\\frac{1}{2}`` = ``0.5``).
  Needs ``pip install 'alignkit[math]'``, imported on the first call. ``format_reward`` goes to a
  wrong answer that parses.
"""
from __future__ import annotations

import math
import re
import threading
from fractions import Fraction
from typing import Any, Sequence

from alignkit.api import UserError

__all__ = ["extract_answer", "normalize_answer", "parse_number", "exact_match", "numeric_match", "math_verify"]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MARKER = re.compile(r"####|\banswer[*_]*\s+is\b[*_]*\s*[:：]?|\banswer[*_]*\s*[:：]", re.IGNORECASE)
_TRIM = " \t\r\n$*_"
_PUNCT = " .,;:!?\"'`"
#: a number: optional sign (not glued to a word: ``5-3`` holds 5 and 3), thousands separators,
#: decimals, an optional ``/denominator``
_NUMBER = re.compile(r"(?<![\w.,/])([-+−]?)((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/(\d+(?:\.\d+)?))?")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` with balanced braces (None when there is none)."""
    for m in reversed(list(_BOXED.finditer(text))):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[m.end():i - 1]
    return None


def _after_last_marker(text: str) -> str | None:
    """The rest of the line after the last answer marker (the next non-empty line when that is empty)."""
    marks = list(_MARKER.finditer(text))
    if not marks:
        return None
    lines = [line for line in text[marks[-1].end():].split("\n") if line.strip(_TRIM)]
    return lines[0] if lines else ""


def _clean(answer: str) -> str:
    answer = answer.strip(_TRIM)
    return answer[:-1].strip(_TRIM) if answer.endswith(".") else answer


def extract_answer(text: str, fallback: str = "whole") -> tuple[str | None, str]:
    """``(answer, rule)`` of ``text`` by the rule of the module docstring; ``rule`` is ``boxed``,
    ``marker``, ``number`` (the last number), ``whole`` or ``none`` (answer None: nothing found,
    or an empty text). ``fallback`` is ``whole`` or ``number``."""
    if fallback not in ("whole", "number"):
        raise ValueError(f"extract_answer: fallback must be 'whole' or 'number', got {fallback!r}")
    text = str(text)
    for rule, found in (("boxed", _last_boxed(text)), ("marker", _after_last_marker(text))):
        if found is not None and _clean(found):
            return _clean(found), rule
    if fallback == "number":
        numbers = list(_NUMBER.finditer(_plain_math(text)))
        return (numbers[-1].group(0), "number") if numbers else (None, "none")
    return (_clean(text), "whole") if _clean(text) else (None, "none")


def normalize_answer(answer: str) -> str:
    """``answer`` lower-cased, whitespace runs as one space, surrounding punctuation removed."""
    return " ".join(str(answer).lower().split()).strip(_PUNCT)


def _plain_math(text: str) -> str:
    """``\\frac{a}{b}`` as ``a/b``; ``\\$``, ``\\,`` and ``\\!`` removed."""
    text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    return text.replace("\\$", "").replace("\\,", "").replace("\\!", "")


def _as_fraction(match: re.Match) -> Fraction | None:
    sign, num, den = match.group(1), match.group(2).replace(",", ""), match.group(3)
    value = Fraction(num)
    if den is not None:
        if Fraction(den) == 0:
            return None
        value /= Fraction(den)
    return -value if sign in ("-", "−") else value


def parse_number(answer: str | None) -> Fraction | None:
    """The number of an answer as an exact rational: the whole answer when it is one number, else its
    last number; None when it holds none."""
    if answer is None:
        return None
    text = _plain_math(str(answer)).strip(_TRIM + ".")
    whole = _NUMBER.fullmatch(text)
    if whole is not None:
        return _as_fraction(whole)
    numbers = [v for v in (_as_fraction(m) for m in _NUMBER.finditer(text)) if v is not None]
    return numbers[-1] if numbers else None


def _short(prompt: Any) -> str:
    """A prompt in a few words, for messages (a chat's last message)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        prompt = prompt[-1].get("content", "")
    text = " ".join(str(prompt).split())
    return repr(text if len(text) <= 50 else text[:47] + "...")


def _references(name: str, prompts: Sequence, completions: Sequence, references: Sequence | None) -> list[str]:
    """The reference of every row as a string; a one-line UserError for a row without one."""
    refs = list(references) if references is not None else [None] * len(completions)
    if len(refs) != len(completions):
        raise ValueError(f"reward function {name!r}: {len(refs)} references for {len(completions)} completions")
    for i, ref in enumerate(refs):
        if ref is None:
            raise UserError(f"reward function {name!r} compares answers with a reference, but prompt {i} "
                            f"({_short(prompts[i]) if i < len(prompts) else '?'}) has none",
                            "give the data a 'reference' field (format: prompt or gsm8k, or "
                            "fields: {reference: <column>}; see docs/data.md)")
    return [str(r) for r in refs]


def exact_match(prompts: Sequence, completions: Sequence[str], *, references: Sequence | None = None,
                format_reward: float = 0.0) -> list[float]:
    """1.0 when the completion's answer equals the reference's after :func:`normalize_answer`."""
    refs = _references("exact_match", prompts, completions, references)
    out = []
    for completion, ref in zip(completions, refs):
        answer, rule = extract_answer(completion)
        gold, _ = extract_answer(ref)
        if answer is not None and gold is not None and normalize_answer(answer) == normalize_answer(gold):
            out.append(1.0)
        else:
            out.append(float(format_reward) if rule in ("boxed", "marker") else 0.0)
    return out


def _close(a: Fraction, b: Fraction, rel_tol: float) -> bool:
    return a == b or (rel_tol > 0 and math.isclose(float(a), float(b), rel_tol=rel_tol))


def numeric_match(prompts: Sequence, completions: Sequence[str], *, references: Sequence | None = None,
                  rel_tol: float = 0.0, format_reward: float = 0.0) -> list[float]:
    """1.0 when the completion's number equals the reference's (exactly, or within ``rel_tol``)."""
    refs = _references("numeric_match", prompts, completions, references)
    out = []
    for i, (completion, ref) in enumerate(zip(completions, refs)):
        gold = parse_number(extract_answer(ref, "number")[0])
        if gold is None:
            raise UserError(f"reward function 'numeric_match': the reference of prompt {i} ({_short(ref)}) "
                            "holds no number", "use exact_match or math_verify for answers that are not numbers")
        value = parse_number(extract_answer(completion, "number")[0])
        if value is None:
            out.append(0.0)
        else:
            out.append(1.0 if _close(value, gold, float(rel_tol)) else float(format_reward))
    return out


def _math_verify_api():
    try:
        from math_verify import parse, verify
    except ImportError:
        raise UserError("reward function 'math_verify' needs the math-verify package",
                        "pip install 'alignkit[math]'") from None
    return parse, verify


def math_verify(prompts: Sequence, completions: Sequence[str], *, references: Sequence | None = None,
                format_reward: float = 0.0, timeout_seconds: int = 5) -> list[float]:
    """1.0 when ``math-verify`` finds the completion's answer equal to the reference's. ``timeout_seconds``
    bounds each parse and comparison (math-verify's signal alarm: main thread only; none elsewhere)."""
    refs = _references("math_verify", prompts, completions, references)
    parse, verify = _math_verify_api()
    limit = int(timeout_seconds) if threading.current_thread() is threading.main_thread() else None
    out = []
    for completion, ref in zip(completions, refs):
        answer, _ = extract_answer(completion)
        parsed = parse(answer, parsing_timeout=limit) if answer is not None else []
        if not parsed:
            out.append(0.0)
            continue
        gold = parse(extract_answer(ref)[0] or "", parsing_timeout=limit)
        out.append(1.0 if gold and verify(gold, parsed, timeout_seconds=limit) else float(format_reward))
    return out
