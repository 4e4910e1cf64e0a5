"""Held-out preference pairs: scoring them and comparing two scores per pair.

Accuracies and win rates count a tie as half, and come with the 95% Wilson score interval of the
resulting proportion (:func:`alignkit.metrics.wilson_interval`, Wilson 1927):
``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, z = 1.95996.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from alignkit.metrics import wilson_interval

__all__ = ["compare", "wilson", "tokenize_pairs", "score_pairs"]


#: the 95% Wilson score interval of a proportion ``p`` over ``n`` trials
wilson = wilson_interval


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """How often ``a`` beats ``b`` (``[N]`` each, pairwise): ``value`` = (wins + 0.5 ties) / n
    (:func:`alignkit.metrics.preference_accuracy`), ``ci`` its 95% Wilson interval, ``n``, ``wins``,
    ``ties``, ``losses``. Example: a = [2, 1, 0, 5], b = [1, 1, 3, 4] -> wins 2, ties 1: 2.5 / 4 = 0.625."""
    from alignkit.metrics import preference_accuracy

    a, b = a.detach().double().cpu(), b.detach().double().cpu()  # [N]
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"compare wants two [N] tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.numel()
    wins, ties = int((a > b).sum()), int((a == b).sum())
    value = preference_accuracy(a, b)
    lo, hi = wilson(value, n) if n else (float("nan"), float("nan"))
    return {"value": value, "ci": [lo, hi], "n": n, "wins": wins, "ties": ties, "losses": n - wins - ties}


def tokenize_pairs(examples: list[dict], tokenizer: Any, data_cfg: Any) -> tuple[list[dict], list[dict]]:
    """``(features, kept examples)``: each pair tokenised as the trainer tokenises held-out pairs
    (:func:`alignkit.data.tokenize.tokenize_example`, kind ``preference``); dropped pairs (too long
    with ``truncation=drop``, identical or empty responses) are left out of both lists."""
    from alignkit.data.tokenize import tokenize_example

    feats, kept = [], []
    for ex in examples:
        f = tokenize_example(ex, "preference", tokenizer, data_cfg)
        if f is not None:
            feats.append(f)
            kept.append(ex)
    return feats, kept


@torch.no_grad()
def score_pairs(features: list[dict], collate: Callable[[list[dict]], dict], scorers: dict[str, Callable[[dict], dict]],
                batch_size: int, device: Any, progress: bool = True,
                by_length: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Run every scorer over the pairs in batches of ``batch_size``: in order (the trainer's evaluation
    batches), or with ``by_length`` longest pairs first, so that each batch pads to a similar length.
    A scorer maps a collated ``preference`` batch to ``{field: (chosen [b], rejected [b])}``; returns
    ``{scorer: {field: [2, N]}}`` (row 0 chosen, row 1 rejected) in the order of ``features``,
    float64 on CPU."""
    from tqdm.auto import tqdm

    n = len(features)
    order = list(range(n))
    if by_length:
        order.sort(key=lambda i: -(len(features[i]["chosen_input_ids"]) + len(features[i]["rejected_input_ids"])))
    parts: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in scorers}
    for i in tqdm(range(0, n, batch_size), desc="scoring held-out pairs", disable=not progress, dynamic_ncols=True):
        batch = collate([features[j] for j in order[i:i + batch_size]])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for name, fn in scorers.items():
            for field, (c, r) in fn(batch).items():
                parts[name].setdefault(field, []).append(torch.stack([c.detach().double().cpu(),
                                                                      r.detach().double().cpu()]))  # [2, b]
    back = torch.empty(n, dtype=torch.long)
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(n)  # position of each pair in the scored order
    return {name: {f: torch.cat(v, dim=1)[:, back] for f, v in fields.items()}  # [2, N]
            for name, fields in parts.items()}


def accuracies(table: dict[str, torch.Tensor], rows: Sequence[tuple[str, str]]) -> dict[str, dict]:
    """``{name: compare(chosen, rejected)}`` for each ``(name, field)`` of ``table`` (``{field: [2, N]}``)."""
    return {name: compare(table[field][0], table[field][1]) for name, field in rows}
