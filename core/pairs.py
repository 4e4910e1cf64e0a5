"""One forward per preference pair: the prompt once, then both responses.

A ``preference`` batch holds ``prompt + chosen`` and ``prompt + rejected`` as two padded rows per pair,
so the standard forward runs every prompt token twice. Here each pair becomes one packed row
``[prompt | chosen | rejected]`` with

* position ids ``0..p+c-1`` for prompt and chosen, and ``p..p+r-1`` again for the rejected response;
* a 4-D attention mask that is causal, except that rejected tokens do not see chosen tokens
  (so every rejected token sees exactly ``prompt + rejected[:j]``, as in its own row);
* a gather of the hidden state that predicts each response token: the previous position, except the
  first rejected token, which is predicted from the prompt's last position.

The log-probs and rewards are those of the standard forward up to float rounding (tests check
this), on ``p + c + r`` instead of ``2p + c + r`` tokens per pair; only response positions go
through the lm_head. Pairs whose chosen and rejected rows do not start with the same prompt tokens
are not packed (:func:`pack_pairs` returns ``None`` and callers use the standard forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit import modeling, ops
from alignkit.data.tokenize import IGNORE

PROMPT, CHOSEN, REJECTED = 1, 2, 3  # segment ids in a packed row (0: padding)


@dataclass
class PackedPairs:
    """A preference batch of ``B`` pairs packed into ``B`` rows of ``L`` tokens."""

    input_ids: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, 1, L, L] bool, True = may attend
    source: torch.Tensor  # [N] flat index (row * L + position) of the hidden state predicting each response token
    target: torch.Tensor  # [N] the response token ids
    owner: torch.Tensor  # [N] which sequence each token belongs to: i (chosen of pair i) or B + i (rejected)
    last: torch.Tensor  # [2B] flat index of each response's last token (chosen rows, then rejected)


def _prompt_length(labels: torch.Tensor) -> torch.Tensor:
    """Tokens before the first scored label of each row ``[B]`` (labels ``[B, T]``)."""
    scored = labels != IGNORE  # [B, T]
    return torch.where(scored.any(-1), scored.int().argmax(-1), scored.new_zeros(()).int() + labels.shape[1])


def pack_pairs(batch: dict) -> PackedPairs | None:
    """Pack a right-padded ``preference`` batch (see :mod:`alignkit.algorithm`); ``None`` when a pair's
    rows do not share their prompt or when the responses are not one contiguous scored span."""
    c_ids, r_ids = batch["chosen_input_ids"], batch["rejected_input_ids"]  # [B, T]
    c_lab, r_lab = batch["chosen_labels"], batch["rejected_labels"]  # [B, T]
    c_len = batch["chosen_attention_mask"].sum(-1).tolist()  # [B]
    r_len = batch["rejected_attention_mask"].sum(-1).tolist()
    pc, pr = _prompt_length(c_lab).tolist(), _prompt_length(r_lab).tolist()
    B = c_ids.shape[0]
    rows = []
    for i in range(B):
        p = pc[i]
        if p != pr[i] or p == 0 or not torch.equal(c_ids[i, :p], r_ids[i, :p]):
            return None
        c, r = c_len[i] - p, r_len[i] - p
        if c < 1 or r < 1 or (c_lab[i, p:p + c] == IGNORE).any() or (r_lab[i, p:p + r] == IGNORE).any():
            return None
        rows.append((p, c, r))
    L = max(p + c + r for p, c, r in rows)
    dev = c_ids.device
    ids = torch.zeros(B, L, dtype=c_ids.dtype, device=dev)  # [B, L]
    pos = torch.zeros(B, L, dtype=torch.long, device=dev)  # [B, L]
    seg = torch.zeros(B, L, dtype=torch.long, device=dev)  # [B, L]
    source, target, owner, last = [], [], [], [0] * (2 * B)
    for i, (p, c, r) in enumerate(rows):
        ids[i, :p + c] = c_ids[i, :p + c]
        ids[i, p + c:p + c + r] = r_ids[i, p:p + r]
        pos[i, :p + c] = torch.arange(p + c, device=dev)
        pos[i, p + c:p + c + r] = torch.arange(p, p + r, device=dev)
        seg[i, :p], seg[i, p:p + c], seg[i, p + c:p + c + r] = PROMPT, CHOSEN, REJECTED
        base = i * L
        source += [base + t for t in range(p - 1, p + c - 1)]  # chosen token t+1 from position t
        source += [base + p - 1] + [base + t for t in range(p + c, p + c + r - 1)]  # rejected: from the prompt's end
        target += [ids[i, p:p + c + r]]
        owner += [i] * c + [B + i] * r
        last[i], last[B + i] = base + p + c - 1, base + p + c + r - 1
    q = torch.arange(L, device=dev)
    causal = q[:, None] >= q[None, :]  # [L, L]
    blind = (seg[:, :, None] == REJECTED) & (seg[:, None, :] == CHOSEN)  # [B, L, L]
    allow = causal[None] & (seg[:, None, :] > 0) & ~blind  # [B, L, L]
    allow |= torch.eye(L, dtype=torch.bool, device=dev)[None]  # padding rows attend to themselves (no empty rows)
    return PackedPairs(ids, pos, allow[:, None], torch.tensor(source, device=dev), torch.cat(target),
                       torch.tensor(owner, device=dev), torch.tensor(last, device=dev))


def _packed_hidden(model, packed: PackedPairs) -> torch.Tensor:
    """Final hidden states ``[B * L, H]`` of the packed rows."""
    base = modeling.unwrap(model)
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else base.base_model
    # additive [B, 1, L, L] in the weights' dtype, made once for all layers: eager adds it to the scores, and
    # SDPA would otherwise convert a bool mask into a new additive one in every layer (and keep each for backward)
    allow = packed.attention_mask
    dtype = base.get_input_embeddings().weight.dtype
    mask = torch.zeros(allow.shape, dtype=dtype, device=allow.device).masked_fill(~allow, torch.finfo(dtype).min)
    h = backbone(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids,
                 use_cache=False).last_hidden_state  # [B, L, H]
    return h.reshape(-1, h.shape[-1])


def packed_pair_logprobs(model, packed: PackedPairs, *, temperature: float = 1.0) -> dict[str, tuple]:
    """Chosen and rejected sequence log-probs of packed pairs, as :meth:`RunContext.pair_logprobs` returns
    them: ``{"sum": (chosen [B], rejected [B]), "mean": (...), "ntokens": (...)}``. Only response positions
    go through the lm_head (:func:`alignkit.ops.fused_linear_logprobs`)."""
    h = _packed_hidden(model, packed)[packed.source]  # [N, H]
    head = modeling.lm_head(model)
    logp = ops.fused_linear_logprobs(h, head.weight, packed.target, bias=head.bias, temperature=temperature)  # [N]
    B2 = packed.last.shape[0]
    total = torch.zeros(B2, dtype=logp.dtype, device=logp.device).index_add(0, packed.owner, logp)  # [2B]
    n = torch.zeros(B2, dtype=torch.long, device=logp.device).index_add(
        0, packed.owner, torch.ones_like(packed.owner))  # [2B]
    out = {"sum": total, "mean": total / n.clamp(min=1), "ntokens": n}
    return {k: tuple(v.chunk(2)) for k, v in out.items()}


def packed_pair_rewards(model, packed: PackedPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar rewards ``(chosen [B], rejected [B])`` (fp32) of a sequence classifier, read at each
    response's last token, as :func:`alignkit.modeling.reward_scores` reads them from separate rows."""
    h = _packed_hidden(model, packed)[packed.last]  # [2B, H]
    r = modeling.unwrap(model).score(h).squeeze(-1).float()  # [2B]
    return tuple(r.chunk(2))
