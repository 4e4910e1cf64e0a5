"""Pairwise LLM-as-judge: which of two responses to a prompt is better, read from a local causal LM.

:func:`judge_pairs` shows the judge the conversation prompt and two responses labelled ``A`` and
``B`` (with the tokenizer's chat template when it has one) and asks which is better. The answer is
not generated and parsed: the verdict is the judge's next-token log-probability of label ``A``
against label ``B`` (each label's probability sums the single-token spellings ``"A"`` and
``" A"``), so every pair gets a verdict and no answer is ever unparseable.

Judges favour the response shown first (or second). Every pair is therefore judged in both
orders, ``a`` shown first and then ``b`` shown first: ``a`` wins when both orders prefer it, ``b``
wins when both prefer ``b``, anything else is a tie counted as half a win. ``agreement`` is the
fraction of pairs whose two orders prefer the same response (1 for an order-consistent judge, 0
for one that always picks the same position).

The prompt template (``template=``) is a name of :data:`PAIRWISE_TEMPLATES`, a ``str.format``
string with the fields ``{prompt}``, ``{first}``, ``{second}``, ``{label_first}``,
``{label_second}``, or ``file:<path>`` (read with :func:`alignkit.datagen.templates.load_template`,
as the data-scoring judge's templates are).
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from alignkit.data.tokenize import has_chat_template
from alignkit.datagen.io import as_text
from alignkit.datagen.templates import load_template
from alignkit.errors import UserError
from alignkit.metrics import wilson_interval

__all__ = ["judge_pairs", "label_logprobs", "PAIRWISE_TEMPLATES", "LABELS"]

#: the labels of the response shown first and second
LABELS = ("A", "B")

#: named judge prompts (MT-Bench-style pairwise comparison, Zheng et al. 2023)
PAIRWISE_TEMPLATES = {
    "pairwise": (
        "Compare two responses to the conversation below. Judge which response is more helpful, accurate, "
        "harmless and relevant to the user's last message. Do not let the order of the responses or their "
        "length influence you.\n\n"
        "[Conversation]\n{prompt}\n\n"
        "[Response {label_first}]\n{first}\n\n"
        "[Response {label_second}]\n{second}\n\n"
        "Which response is better? Answer with a single letter, {label_first} or {label_second}."
    ),
}
DEFAULT_TEMPLATE = "pairwise"
FIELDS = ("prompt", "first", "second", "label_first", "label_second")
#: appended to the judge prompt when the tokenizer has no chat template, so the label comes next
PLAIN_SUFFIX = "\n\nAnswer:"


def _resolve_template(template: str | None) -> tuple[str, str]:
    """``(name, text)`` of ``template``: a :data:`PAIRWISE_TEMPLATES` name, ``file:<path>`` or a format string."""
    if template is None:
        template = DEFAULT_TEMPLATE
    if template in PAIRWISE_TEMPLATES:
        return template, PAIRWISE_TEMPLATES[template]
    text = load_template(str(template), "judge template", FIELDS)
    if "{first}" not in text or "{second}" not in text:
        raise UserError("the judge template must show both responses",
                        "include {first} and {second} (and {prompt}) in it, or use one of: "
                        + ", ".join(PAIRWISE_TEMPLATES))
    return (template if template.startswith("file:") else "custom"), text


def _label_token_ids(tokenizer: Any) -> list[list[int]]:
    """For each label, the ids of its single-token spellings (``"A"``, ``" A"``); the sets must be disjoint."""
    ids: list[list[int]] = []
    for label in LABELS:
        found = []
        for spelling in (label, " " + label):
            enc = tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and enc[0] not in found:
                found.append(int(enc[0]))
        ids.append(found)
    if not all(ids) or set(ids[0]) & set(ids[1]):
        raise UserError(f"the judge's tokenizer has no single token for the labels {' and '.join(LABELS)}",
                        "use a judge model whose tokenizer encodes 'A' and 'B' as single tokens")
    return ids


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def label_logprobs(model: Any, tokenizer: Any, texts: Sequence[str], label_ids: Sequence[Sequence[int]], *,
                   batch_size: int = 4, progress: bool = False, add_special_tokens: bool = True) -> torch.Tensor:
    """Log-probabilities ``[N, L]`` (float32, CPU) of each label (``label_ids[l]``: its token ids, summed)
    as the next token after each of ``texts``.

    Texts are batched in order of length (identical inputs give identical numbers whatever their
    position in ``texts``), left-padded with explicit position ids, and only the last position's
    logits are computed when the model supports ``logits_to_keep``."""
    from tqdm.auto import tqdm

    enc = [tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts]
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    for i, ids in enumerate(enc):
        if not ids:
            raise UserError(f"judge prompt {i} is empty", "check the prompts and responses")
        if limit is not None and len(ids) > limit:
            raise UserError(f"judge prompt {i} is {len(ids)} tokens, more than the judge's context of {limit}",
                            "shorten the responses or use a judge with a longer context")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    device = _device(model)
    order = sorted(range(len(enc)), key=lambda i: (len(enc[i]), texts[i]))
    out = torch.empty(len(enc), len(label_ids), dtype=torch.float32)  # [N, L]
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="judge", disable=not progress,
                              dynamic_ncols=True):
                rows = order[start:start + batch_size]
                width = max(len(enc[i]) for i in rows)
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [B, T], left-padded
                mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
                for r, i in enumerate(rows):
                    input_ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
                    mask[r, width - len(enc[i]):] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]: 0 at each row's first real token
                kwargs = {"logits_to_keep": 1} if keep else {}
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), **kwargs).logits  # [B, T or 1, V]
                logp = torch.log_softmax(logits[:, -1, :].float(), dim=-1).cpu()  # [B, V]: the next token
                for label, ids in enumerate(label_ids):
                    out[rows, label] = torch.logsumexp(logp[:, list(ids)], dim=-1)  # [B]
    finally:
        model.train(was_training)
    return out


def judge_pairs(judge_model: Any, judge_tokenizer: Any, prompts: Sequence, responses_a: Sequence[str],
                responses_b: Sequence[str], *, batch_size: int = 4, progress: bool = True,
                template: str | None = None) -> dict:
    """Judge each pair ``(responses_a[i], responses_b[i])`` to ``prompts[i]`` in both orders.

    Returns ``win_rate`` (of ``a``; ties count half), ``win_rate_ci`` (95% Wilson interval),
    ``wins`` / ``losses`` / ``ties`` (counts of pairs), ``agreement`` (fraction of pairs whose two
    orders prefer the same response), ``n``, ``template`` (its name) and ``verdicts``: per pair,
    ``p_a_first_order`` / ``p_a_second_order`` (probability of ``a``'s label against ``b``'s, with
    ``a`` shown first and second), ``prefer_a_first_order`` / ``prefer_a_second_order`` (True,
    False, or None for an exact 0.5) and ``outcome`` (``"a"``, ``"b"`` or ``"tie"``)."""
    n = len(prompts)
    if not (len(responses_a) == len(responses_b) == n):
        raise UserError(f"judge_pairs got {n} prompts, {len(responses_a)} responses a and {len(responses_b)} "
                        "responses b", "give one response a and one response b per prompt")
    if n == 0:
        raise UserError("judge_pairs got no pairs", "give at least one prompt with two responses")
    if batch_size < 1:
        raise UserError(f"judge batch size {batch_size} is out of range", "use a batch size >= 1")
    name, text = _resolve_template(template)
    label_ids = _label_token_ids(judge_tokenizer)
    chat = has_chat_template(judge_tokenizer)

    def render(prompt: Any, first: str, second: str) -> str:
        body = text.format(prompt=as_text(prompt), first=first, second=second, label_first=LABELS[0],
                           label_second=LABELS[1])
        if chat:
            return judge_tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                       add_generation_prompt=True)
        return body + PLAIN_SUFFIX

    texts = []
    for p, a, b in zip(prompts, responses_a, responses_b):
        texts += [render(p, a, b), render(p, b, a)]  # a shown first, then b shown first
    # the chat template already holds the special tokens (BOS) it needs
    logp = label_logprobs(judge_model, judge_tokenizer, texts, label_ids, batch_size=batch_size,
                          progress=progress, add_special_tokens=not chat)  # [2n, 2]
    p_first = torch.softmax(logp, dim=-1)[:, 0].view(n, 2)  # [n, 2]: P(label of the first-shown response)
    p_a = torch.stack([p_first[:, 0], 1.0 - p_first[:, 1]], dim=1)  # [n, 2]: P(a) in order 1 and order 2

    def prefers_a(p: float) -> bool | None:
        return True if p > 0.5 else False if p < 0.5 else None

    verdicts, wins, losses, agree = [], 0, 0, 0
    for i in range(n):
        first, second = (prefers_a(float(p_a[i, k])) for k in range(2))
        outcome = "a" if first is True and second is True else "b" if first is False and second is False else "tie"
        wins += outcome == "a"
        losses += outcome == "b"
        agree += first is not None and first == second
        verdicts.append({"p_a_first_order": float(p_a[i, 0]), "p_a_second_order": float(p_a[i, 1]),
                         "prefer_a_first_order": first, "prefer_a_second_order": second, "outcome": outcome})
    ties = n - wins - losses
    win_rate = (wins + 0.5 * ties) / n
    return {"win_rate": win_rate, "win_rate_ci": wilson_interval(win_rate, n), "wins": wins, "losses": losses,
            "ties": ties, "agreement": agree / n, "n": n, "template": name, "verdicts": verdicts}
