"""Tokenisation with loss masks.

A prompt is rendered with the tokenizer's chat template when it has one
(``add_generation_prompt``), otherwise as HH-style text
(``\\n\\nHuman: ...\\n\\nAssistant:``) for message lists or as-is for strings.
Each response gets the template's end-of-turn token (chat) or EOS (plain text).
Labels copy the input ids on response tokens (EOS included) and are -100 on
the prompt, so the loss sees responses only.

Truncation (``data.truncation``): ``truncate`` keeps the last
``max_prompt_length`` prompt tokens, then cuts the response from the right to
fit ``max_length`` (a cut response gets no EOS); ``drop`` drops such examples.
Examples that cannot teach anything are dropped before tokenisation: a
preference pair whose chosen and rejected responses are the same text
(whitespace aside) is counted as ``identical_pair``, and an example with an
empty (whitespace-only) response as ``empty_response``. Prompt-only examples
are never dropped this way.
Every truncation and drop is counted in :data:`STATS` and logged by the trainer.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from alignkit.data.formats import HH_ASSISTANT, HH_HUMAN

IGNORE = -100

#: counts of truncated and dropped examples since the last :func:`reset_stats`
STATS: Counter = Counter()


def reset_stats() -> Counter:
    old = Counter(STATS)
    STATS.clear()
    return old


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(prompt: Any) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_prompt(prompt: Any, tokenizer) -> str:
    """The text the model sees before its response."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(_messages(prompt), tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, str):
        return prompt
    text = ""
    for m in prompt:
        text += (HH_HUMAN if m["role"] == "user" else HH_ASSISTANT) + " " + m["content"]
    return text + HH_ASSISTANT


def render_response(prompt: Any, response: str, tokenizer) -> tuple[str, bool]:
    """(response text, whether an EOS id must still be appended)."""
    if has_chat_template(tokenizer):
        msgs = _messages(prompt)
        head = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(head):
            raise ValueError("the chat template renders the prompt differently with and without a response")
        text = full[len(head):]
        eot = tokenizer.eos_token
        if eot and eot in text:  # drop what follows the end-of-turn token (e.g. a newline)
            text = text[: text.rindex(eot) + len(eot)]
            return text, False
        return text, True
    sep = " " if not isinstance(prompt, str) else ""
    return sep + response, True


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_response(prompt: Any, response: str, tokenizer) -> list[int]:
    """Response ids ending with EOS (or the chat template's end-of-turn token)."""
    text, add_eos = render_response(prompt, response, tokenizer)
    ids = _ids(tokenizer, text)
    return ids + [tokenizer.eos_token_id] if add_eos else ids


def _fit(prompt_ids: list[int], responses: list[list[int]], data_cfg) -> tuple[list[int], list[list[int]]] | None:
    """Apply the truncation policy to one prompt and its responses (all or none)."""
    longest = max(len(r) for r in responses)
    if len(prompt_ids) + longest <= data_cfg.max_length:
        return prompt_ids, responses
    if data_cfg.truncation == "drop":
        return None
    if len(prompt_ids) > data_cfg.max_prompt_length:
        prompt_ids = prompt_ids[-data_cfg.max_prompt_length:]
        STATS["prompt_truncated"] += 1
    budget = data_cfg.max_length - len(prompt_ids)
    if budget <= 0:
        return None
    cut = [r[:budget] for r in responses]
    STATS["response_truncated"] += sum(len(r) > budget for r in responses)
    return prompt_ids, cut


def _join(prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int]]:
    return prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + list(response_ids)


def _response_texts(example: dict, kind: str) -> list:
    """The responses of a normalised example of ``kind`` (sft, preference or ranked)."""
    if kind == "sft":
        return [example["completion"]]
    if kind == "preference":
        return [example["chosen"], example["rejected"]]
    if kind == "ranked":
        return list(example["responses"])
    raise ValueError(f"unknown data kind {kind!r}")


def _blank(text) -> bool:
    return isinstance(text, str) and not text.strip()


def unusable_reason(texts: list, kind: str) -> str | None:
    """Why an example with these responses cannot train (its :data:`STATS` key), or None."""
    if any(_blank(t) for t in texts):
        return "empty_response"
    if kind == "preference" and str(texts[0]).strip() == str(texts[1]).strip():
        return "identical_pair"
    return None


def tokenize_example(example: dict, kind: str, tokenizer, data_cfg, drop_unusable: bool = True) -> dict | None:
    """Token ids and labels for one normalised example; ``None`` if dropped.

    ``drop_unusable=False`` keeps empty responses and identical pairs (scoring a
    generated completion, which may be empty, rather than training on data)."""
    p_ids = _ids(tokenizer, render_prompt(example["prompt"], tokenizer))
    if kind == "prompt":
        if len(p_ids) > data_cfg.max_prompt_length:
            if data_cfg.truncation == "drop":
                STATS["dropped"] += 1
                return None
            STATS["prompt_truncated"] += 1
            p_ids = p_ids[-data_cfg.max_prompt_length:]
        # "prompt" stays raw (str or chat messages): reward functions, reward models with another
        # tokenizer and samples.jsonl see the prompt as the data gave it, not the rendered template
        return {"prompt_input_ids": p_ids, "prompt": example["prompt"], "reference": example.get("reference")}
    texts = _response_texts(example, kind)
    reason = unusable_reason(texts, kind) if drop_unusable else None
    if reason is not None:
        STATS[reason] += 1
        return None
    responses = [encode_response(example["prompt"], t, tokenizer) for t in texts]
    fitted = _fit(p_ids, responses, data_cfg)
    if fitted is None:
        STATS["dropped"] += 1
        return None
    p_ids, responses = fitted
    pairs = [_join(p_ids, r) for r in responses]
    if kind == "sft":
        return {"input_ids": pairs[0][0], "labels": pairs[0][1]}
    if kind == "preference":
        out = {"chosen_input_ids": pairs[0][0], "chosen_labels": pairs[0][1],
               "rejected_input_ids": pairs[1][0], "rejected_labels": pairs[1][1],
               "margin": float(example.get("margin", 0.0))}
        return out
    return {"input_ids": [p[0] for p in pairs], "labels": [p[1] for p in pairs], "scores": list(example["scores"])}
