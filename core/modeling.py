"""Model-side helpers every algorithm shares: hidden states, per-token and
per-sequence log-probs (through :mod:`alignkit.ops`), scalar rewards.

The causal shift happens here, once: entry ``t`` of a ``[B, T-1]`` result
scores token ``input_ids[:, t+1]`` given the tokens up to ``t``.
"""
from __future__ import annotations

import torch

from alignkit import ops
from alignkit.data.tokenize import IGNORE


def unwrap(model):
    """The plain ``transformers`` model under DDP / peft wrappers (LoRA layers
    stay active: peft injects them in place)."""
    model = getattr(model, "module", model)  # DDP / accelerate
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    return model


def lm_head(model) -> torch.nn.Linear:
    return unwrap(model).get_output_embeddings()


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states ``[B, T, H]`` of the backbone, without the lm_head."""
    base = unwrap(model)
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else base.base_model
    return backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def token_logprobs(model, input_ids, attention_mask, labels, *, fused: bool = True, temperature: float = 1.0,
                   return_entropy: bool = False):
    """Per-token log-probs of ``labels`` under ``model``.

    Args: ``input_ids``, ``attention_mask``, ``labels``: ``[B, T]`` (labels -100
    where no loss). Returns ``(logp [B, T-1] fp32, mask [B, T-1] bool)`` and,
    with ``return_entropy``, the entropy ``[B, T-1]`` too. With ``fused`` the
    log-probs come from :func:`alignkit.ops.fused_linear_logprobs` on the final
    hidden states and the lm_head weight, so no ``[B, T, V]`` logits exist.
    """
    targets = labels[:, 1:]  # [B, T-1]
    mask = targets != IGNORE  # [B, T-1]
    if fused:
        h = hidden_states(model, input_ids, attention_mask)[:, :-1]  # [B, T-1, H]
        head = lm_head(model)
        B, Tm1, H = h.shape
        out = ops.fused_linear_logprobs(h.reshape(B * Tm1, H), head.weight, targets.reshape(-1), bias=head.bias,
                                        temperature=temperature, return_entropy=return_entropy)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]  # [B, T-1, V]
        out = ops.logprobs(logits, targets, temperature=temperature, return_entropy=return_entropy)
    if return_entropy:
        logp, ent = out
        return logp.reshape(targets.shape), mask, ent.reshape(targets.shape)
    return out.reshape(targets.shape), mask


def sequence_logprobs(model, input_ids, attention_mask, labels, **kw) -> dict[str, torch.Tensor]:
    """Sum and mean of response-token log-probs per sequence.

    Returns ``sum [B]``, ``mean [B]``, ``ntokens [B]``, ``token_logp [B, T-1]``, ``mask [B, T-1]``.
    """
    logp, mask = token_logprobs(model, input_ids, attention_mask, labels, **kw)
    n = mask.sum(-1)  # [B]
    total = (logp * mask).sum(-1)  # [B]
    return {"sum": total, "mean": total / n.clamp(min=1), "ntokens": n, "token_logp": logp, "mask": mask}


def reward_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar rewards ``[B]`` (fp32) of a sequence classifier, read at the last
    non-padding token (padding may be left or right)."""
    h = hidden_states(model, input_ids, attention_mask)  # [B, T, H]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # [T]
    last = (positions * attention_mask).argmax(-1)  # [B]
    h_last = h[torch.arange(h.shape[0], device=h.device), last]  # [B, H]
    head = unwrap(model).score
    return head(h_last).squeeze(-1).float()  # [B]
