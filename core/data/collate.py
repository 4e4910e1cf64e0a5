"""Pad tokenised examples into batches (see :mod:`alignkit.algorithm` for the layouts)."""
from __future__ import annotations

import torch

from alignkit.data.tokenize import IGNORE


def pad(seqs: list[list[int]], value: int, length: int | None = None, left: bool = False) -> torch.Tensor:
    """``[len(seqs), length]`` int64, padded with ``value`` on the right (or left)."""
    length = length or max(len(s) for s in seqs)
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if left:
                out[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
            else:
                out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _mask(seqs: list[list[int]], length: int, left: bool = False) -> torch.Tensor:
    return pad([[1] * len(s) for s in seqs], 0, length, left)


def collate(features: list[dict], kind: str, tokenizer) -> dict:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if kind == "sft":
        ids = [f["input_ids"] for f in features]
        T = max(len(s) for s in ids)
        return {"input_ids": pad(ids, pad_id, T),  # [B, T]
                "attention_mask": _mask(ids, T),  # [B, T]
                "labels": pad([f["labels"] for f in features], IGNORE, T)}  # [B, T]
    if kind == "preference":
        seqs = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
        T = max(len(s) for s in seqs)
        out = {}
        for side in ("chosen", "rejected"):
            ids = [f[f"{side}_input_ids"] for f in features]
            out[f"{side}_input_ids"] = pad(ids, pad_id, T)  # [B, T]
            out[f"{side}_attention_mask"] = _mask(ids, T)  # [B, T]
            out[f"{side}_labels"] = pad([f[f"{side}_labels"] for f in features], IGNORE, T)  # [B, T]
        out["margin"] = torch.tensor([f.get("margin", 0.0) for f in features], dtype=torch.float32)  # [B]
        return out
    if kind == "ranked":
        K = max(len(f["input_ids"]) for f in features)
        T = max(len(s) for f in features for s in f["input_ids"])
        B = len(features)
        ids = torch.full((B, K, T), pad_id, dtype=torch.long)
        labels = torch.full((B, K, T), IGNORE, dtype=torch.long)
        mask = torch.zeros((B, K, T), dtype=torch.long)
        scores = torch.zeros((B, K), dtype=torch.float32)
        valid = torch.zeros((B, K), dtype=torch.bool)
        for b, f in enumerate(features):
            k = len(f["input_ids"])
            ids[b, :k] = pad(f["input_ids"], pad_id, T)
            labels[b, :k] = pad(f["labels"], IGNORE, T)
            mask[b, :k] = _mask(f["input_ids"], T)
            scores[b, :k] = torch.tensor(f["scores"], dtype=torch.float32)
            valid[b, :k] = True
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,  # [B, K, T]
                "scores": scores, "valid": valid}  # [B, K]
    if kind == "prompt":
        ids = [f["prompt_input_ids"] for f in features]
        T = max(len(s) for s in ids)
        return {"prompt_input_ids": pad(ids, pad_id, T, left=True),  # [B, Tp] left padded
                "prompt_attention_mask": _mask(ids, T, left=True),  # [B, Tp]
                "prompts": [f["prompt"] for f in features],
                "references": [f.get("reference") for f in features]}
    raise ValueError(f"unknown data kind {kind!r}")
