"""Chain-of-Hindsight data: preference pairs -> feedback sequences with a loss mask.

A preference example ``{"prompt", "chosen", "rejected"}`` (HH-RLHF records are
normalised to this by :mod:`alignkit.data.formats`; raw HH dialogues are accepted
too) becomes one of four *forms* (Liu et al. 2023, section 3)::

    good      User: {prompt} A helpful answer: {chosen}<eos>
    bad       User: {prompt} An unhelpful answer: {rejected}<eos>
    good_bad  User: {prompt} A helpful answer: {chosen}<eos> An unhelpful answer: {rejected}<eos>
    bad_good  User: {prompt} An unhelpful answer: {rejected}<eos> A helpful answer: {chosen}<eos>

Labels copy the ids of the response tokens and their EOS only; the ``User:`` prompt
and the marker text are -100 (context, never trained on). Each part is tokenised on
its own and concatenated, so a response's tokens are the same in every form (the
space before a response belongs to the response: ``" " + text``).

Prompts are rendered as plain text: a string prompt in HH style
(``\\n\\nHuman: ...\\n\\nAssistant:``) loses its leading ``Human:`` and trailing
``Assistant:`` and its other ``Human:`` turns become ``User:``; a message list is
rendered the same way (first user turn bare, later turns ``Assistant: ...`` /
``User: ...``, separated by blank lines). Chat templates are not used: the markers
*are* the template.

At evaluation time the policy is prompted with ``User: {prompt} A helpful answer:``
(:func:`generation_prompt`), and preference pairs are scored as the two responses
after that prompt (:func:`tokenize_eval_pair`).

The forgetful causal mask (:func:`forgetful_causal_mask`) randomly hides a fraction
``U(0, max_ratio)`` of past tokens in attention during training (Liu et al. 2022,
"Forgetful Causal Masking"; CoH reference code ``fcm_max_ratio``), as a 4-D additive
mask that Hugging Face models (eager and SDPA attention) take as is.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import torch

from alignkit.api import HH_ASSISTANT, HH_HUMAN, IGNORE, parse_hh_dialogue, STATS

__all__ = [
    "FORMS", "CohTemplate", "normalise_pair", "prompt_text", "feedback_segments", "choose_form",
    "tokenize_segments", "tokenize_feedback", "tokenize_eval_pair", "generation_prompt", "forgetful_causal_mask",
]

FORMS = ("good", "bad", "good_bad", "bad_good")


@dataclass(frozen=True)
class CohTemplate:
    """The natural-language feedback markers (each marker is preceded by one space)."""

    user: str = "User: {prompt}"
    good: str = "A helpful answer:"
    bad: str = "An unhelpful answer:"


def prompt_text(prompt: Any) -> str:
    """The ``{prompt}`` of the CoH template (see module docstring)."""
    if isinstance(prompt, str):
        text = prompt.strip()
        if text.endswith(HH_ASSISTANT.strip()):
            text = text[: -len(HH_ASSISTANT.strip())].rstrip()
        if text.startswith(HH_HUMAN.strip()):
            text = text[len(HH_HUMAN.strip()):].lstrip()
        return text.replace(HH_HUMAN, "\n\nUser:")
    parts = []
    for i, m in enumerate(prompt):
        content = str(m["content"]).strip()
        if i == 0 and m["role"] == "user":
            parts.append(content)
        else:
            role = "User" if m["role"] == "user" else "Assistant" if m["role"] == "assistant" else m["role"].title()
            parts.append(f"{role}: {content}")
    return "\n\n".join(parts)


def normalise_pair(example: dict) -> dict:
    """A preference example with ``prompt``; raw HH records (``chosen``/``rejected`` full
    dialogues, no ``prompt``) are split with :func:`alignkit.data.formats.parse_hh_dialogue`."""
    if "prompt" in example and example["prompt"] is not None:
        return example
    prompt, chosen = parse_hh_dialogue(example["chosen"])
    _, rejected = parse_hh_dialogue(example["rejected"])
    return {**example, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def feedback_segments(example: dict, form: str, template: CohTemplate = CohTemplate()) -> list[tuple[str, bool]]:
    """``[(text, is_response), ...]`` for one form; a response segment is followed by EOS."""
    if form not in FORMS:
        raise ValueError(f"unknown CoH form {form!r}; choose from {FORMS}")
    ex = normalise_pair(example)
    head = template.user.format(prompt=prompt_text(ex["prompt"]))
    good = [(" " + template.good, False), (" " + ex["chosen"].strip(), True)]
    bad = [(" " + template.bad, False), (" " + ex["rejected"].strip(), True)]
    body = {"good": good, "bad": bad, "good_bad": good + bad, "bad_good": bad + good}[form]
    return [(head, False)] + body


def choose_form(example: dict, forms: Any, seed: int = 0) -> str:
    """One of ``forms`` for this example, fixed by a hash of its text and ``seed`` (so a
    re-run, or a data loader with workers, picks the same form)."""
    forms = list(forms)
    ex = normalise_pair(example)
    key = f"{seed}|{prompt_text(ex['prompt'])}|{ex['chosen']}|{ex['rejected']}".encode()
    return random.Random(hashlib.sha256(key).hexdigest()).choice(forms)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_segments(segments: list[tuple[str, bool]], tokenizer, max_length: int) -> dict | None:
    """Concatenate segments into ``input_ids``/``labels`` (responses + EOS labelled).

    Too long: the head (prompt) keeps its last tokens, down to a quarter of ``max_length``;
    then the sequence is cut from the right (a cut response loses its EOS). Returns
    ``None`` when no response token survives.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("Chain of Hindsight needs a tokenizer with an EOS token")
    parts = []
    for text, is_resp in segments:
        ids = _ids(tokenizer, text)
        parts.append((ids + [eos], True) if is_resp else (ids, False))
    total = sum(len(p) for p, _ in parts)
    if total > max_length:
        head, is_resp = parts[0]
        keep = max(max_length // 4, max_length - (total - len(head)))
        if len(head) > keep:
            parts[0] = (head[-keep:], is_resp)
            STATS["prompt_truncated"] += 1
        if sum(len(p) for p, _ in parts) > max_length:
            STATS["response_truncated"] += 1
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, is_resp in parts:
        input_ids += ids
        labels += ids if is_resp else [IGNORE] * len(ids)
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(x == IGNORE for x in labels):
        STATS["dropped"] += 1
        return None
    return {"input_ids": input_ids, "labels": labels}


def tokenize_feedback(example: dict, tokenizer, max_length: int, form: str,
                      template: CohTemplate = CohTemplate()) -> dict | None:
    """``{"input_ids", "labels"}`` (an ``sft``-kind feature) of one feedback sequence."""
    return tokenize_segments(feedback_segments(example, form, template), tokenizer, max_length)


def generation_prompt(prompt: Any, template: CohTemplate = CohTemplate()) -> str:
    """``User: {prompt} A helpful answer:``: what the policy is prompted with at evaluation."""
    return template.user.format(prompt=prompt_text(prompt)) + " " + template.good


def tokenize_eval_pair(example: dict, tokenizer, max_length: int, template: CohTemplate = CohTemplate()) -> dict | None:
    """A ``preference``-kind feature: chosen and rejected after the helpful-answer prompt, so the
    held-out accuracy asks whether the model, told to be helpful, prefers the chosen response."""
    ex = normalise_pair(example)
    head = generation_prompt(ex["prompt"], template)
    out = {"margin": float(ex.get("margin", 0.0))}
    for side in ("chosen", "rejected"):
        f = tokenize_segments([(head, False), (" " + ex[side].strip(), True)], tokenizer, max_length)
        if f is None:
            return None
        out[f"{side}_input_ids"], out[f"{side}_labels"] = f["input_ids"], f["labels"]
    return out


def forgetful_causal_mask(attention_mask: torch.Tensor, max_ratio: float = 0.05, *, min_ratio: float = 0.0,
                          generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """4-D additive attention mask ``[B, 1, T, T]``: causal, padding hidden, and in each row a
    random fraction of the past masked out.

    Per sequence a ratio ``rho ~ U(min_ratio, max_ratio)`` is drawn, then every (query i,
    key j <= i) pair is dropped with probability ``rho``; key 0 is always visible, so no
    row is empty (as the CoH reference code does). ``attention_mask``: ``[B, T]`` 1/0 for
    tokens/padding. Entries are 0 (attend) or ``finfo(dtype).min`` (masked) in ``dtype``,
    the form Hugging Face eager and SDPA attention add to the scores.
    """
    B, T = attention_mask.shape
    device = attention_mask.device
    keep = torch.ones(T, T, dtype=torch.bool, device=device).tril().expand(B, T, T).clone()  # [B, Tq, Tk]
    keep &= attention_mask.bool().view(B, 1, T)
    if max_ratio > 0:
        gdev = generator.device if generator is not None else device
        rho = torch.rand(B, 1, 1, generator=generator, device=gdev) * (max_ratio - min_ratio) + min_ratio
        keep &= (torch.rand(B, T, T, generator=generator, device=gdev) >= rho).to(device)
    keep[:, :, 0] = True
    mask = torch.zeros(B, 1, T, T, dtype=dtype, device=device)
    return mask.masked_fill(~keep.unsqueeze(1), torch.finfo(dtype).min)
