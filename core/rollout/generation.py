"""Sampling responses from a causal LM: ``generate`` and the :class:`Rollout` it returns.

A rollout holds, for ``N = n_prompts * num_samples`` rows (the samples of one prompt
are consecutive rows, so ``row // group_size`` is the prompt index):

* ``input_ids``, ``attention_mask``, ``labels`` ``[N, T]``: prompt + response,
  **re-packed left-aligned** (the prompt starts at position 0, padding is on the
  right), so a plain forward without ``position_ids`` sees exactly the positions
  ``model.generate`` used on the left-padded prompt. ``labels`` hold the response
  tokens including the stop token (EOS) that ended them, and -100 on prompt and
  padding, i.e. the format of :mod:`alignkit.algorithm` ``sft`` batches.
* ``mask`` ``[N, T-1]`` = ``labels[:, 1:] != -100``: aligned with
  :func:`alignkit.modeling.token_logprobs` (entry ``t`` scores token ``t+1``).
* ``completions``: decoded responses (special tokens and the EOS dropped),
  ``prompts`` / ``references``: the raw prompt (and reference) of each row,
  ``has_eos`` ``[N]``: whether the response stopped by itself,
  ``response_lengths`` ``[N]``: response tokens including EOS.
* ``scores`` ``[N]``: ``None`` until a caller fills it (see :mod:`alignkit.rollout.rewards`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch

__all__ = ["Rollout", "generate", "generate_from_prompts", "tokenize_prompts", "stop_token_ids", "pad_token_id",
           "concat_prompt_batches", "row_seeds", "KeyedGumbelSampler"]


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [N, T] prompt + response, right padded
    attention_mask: torch.Tensor  # [N, T]
    labels: torch.Tensor  # [N, T] response ids (incl. EOS), -100 elsewhere
    prompt_lengths: torch.Tensor  # [N]
    response_lengths: torch.Tensor  # [N] incl. EOS
    has_eos: torch.Tensor  # [N] bool
    prompts: list  # [N] raw prompts
    completions: list  # [N] decoded responses
    group_size: int = 1  # samples per prompt (consecutive rows)
    references: list | None = None  # [N] or None
    scores: torch.Tensor | None = None  # [N] float32, filled by the caller
    #: [N, T-1] float32, aligned with ``mask``: the engine's log-prob of each sampled token at the
    #: sampling temperature (0 off the mask); ``None`` when the engine does not report them
    engine_logprobs: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """``[N, T-1]`` bool, aligned with ``token_logprobs``: True where entry t scores a response token."""
        return self.labels[:, 1:] != -100

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> "Rollout":
        """Rows ``index`` (a 1-D index or bool mask), trailing all-padding columns dropped.
        ``group_size`` becomes 1 unless the selection is the identity."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().squeeze(1)
        idx_list = idx.tolist()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = v[idx.to(v.device)]
            elif isinstance(v, list):
                out[f.name] = [v[i] for i in idx_list]
            else:
                out[f.name] = v
        if idx_list != list(range(len(self))):
            out["group_size"] = 1
        width = int(out["attention_mask"].sum(1).max()) if idx_list else 1
        for k in ("input_ids", "attention_mask", "labels"):
            out[k] = out[k][:, :width]
        if out["engine_logprobs"] is not None:
            out["engine_logprobs"] = out["engine_logprobs"][:, :max(width - 1, 0)]
        return replace(self, **out)


def row_seeds(*key: Any, index: Sequence[int], num_samples: int) -> list[int]:
    """One 63-bit seed per rollout row (prompt ``index[i]``, sample ``j``), from ``key`` (e.g. the run
    seed, ``"train"`` and the iteration): a row's sample depends on its key alone, not on which
    other prompts share its batch or process."""
    import hashlib

    base = ":".join(str(k) for k in key)
    return [int.from_bytes(hashlib.blake2b(f"{base}:{int(i)}:{j}".encode(), digest_size=8).digest(), "little") >> 1
            for i in index for j in range(int(num_samples))]


class KeyedGumbelSampler:
    """A ``transformers`` logits processor that turns greedy decoding into sampling from
    ``softmax(scores)`` by adding Gumbel noise (Gumbel-max trick) drawn from one seeded generator
    per row: row ``i``'s ``t``-th token uses the ``t``-th draw of ``seeds[i]``, whatever the batch."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # scores [N, V]
        V = scores.shape[1]
        u = torch.stack([torch.rand(V, generator=g, dtype=torch.float64) for g in self.generators])  # [N, V]
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))  # [N, V]
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids: list[int] = []
    cands = [getattr(tokenizer, "eos_token_id", None)]
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        cands.append(gen_cfg.eos_token_id)
    for c in cands:
        for i in (c if isinstance(c, (list, tuple)) else [c]):
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer has no eos_token_id: cannot tell where a response stops")
    return ids


def pad_token_id(model: Any, tokenizer: Any) -> int:
    """The tokenizer's pad id, else the first stop token."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else stop_token_ids(model, tokenizer)[0]


def concat_prompt_batches(batches: list[dict], pad_id: int) -> dict:
    """Join ``prompt`` batches (left padded ``prompt_input_ids`` / ``prompt_attention_mask``,
    ``prompts``, ``references``) into one, left-padding to the longest."""
    if len(batches) == 1:
        return batches[0]
    width = max(b["prompt_input_ids"].shape[1] for b in batches)
    ids, masks, prompts, refs = [], [], [], []
    for b in batches:
        pad = width - b["prompt_input_ids"].shape[1]
        ids.append(torch.nn.functional.pad(b["prompt_input_ids"], (pad, 0), value=pad_id))
        masks.append(torch.nn.functional.pad(b["prompt_attention_mask"], (pad, 0), value=0))
        prompts += list(b["prompts"])
        refs += list(b.get("references") or [None] * len(b["prompts"]))
    out = {"prompt_input_ids": torch.cat(ids), "prompt_attention_mask": torch.cat(masks),
           "prompts": prompts, "references": refs}
    if all("index" in b for b in batches):
        out["index"] = torch.cat([b["index"] for b in batches])  # [B]
    return out


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor, *,
             max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             num_samples: int = 1, prompts: Sequence | None = None, references: Sequence | None = None,
             seeds: Sequence[int] | None = None) -> Rollout:
    """Sample ``num_samples`` responses per prompt with ``model.generate``.

    ``prompt_input_ids`` / ``prompt_attention_mask``: ``[B, Tp]``, **left** padded (as in
    ``prompt`` batches). ``temperature <= 0`` means greedy decoding; ``top_k = 0`` and
    ``top_p = 1`` disable those filters (the model's own generation defaults are not used).
    A response stops at the first stop token (:func:`stop_token_ids`) or after
    ``max_new_tokens``. ``prompts`` (raw prompt of each of the ``B`` rows, for reward
    functions and logging) defaults to the decoded prompt ids. The model is put in eval
    mode while sampling and restored afterwards. Returns a :class:`Rollout` of
    ``B * num_samples`` rows, samples of one prompt consecutive. ``seeds`` (one per row, see
    :func:`row_seeds`) makes each row's sample depend on its seed alone
    (:class:`KeyedGumbelSampler`); without them sampling draws from torch's global RNG.
    """
    stops = stop_token_ids(model, tokenizer)
    pad_id = pad_token_id(model, tokenizer)
    device = prompt_input_ids.device
    kwargs: dict[str, Any] = dict(max_new_tokens=int(max_new_tokens), pad_token_id=pad_id, eos_token_id=stops,
                                  num_return_sequences=int(num_samples), use_cache=True)
    inputs, attn_in = prompt_input_ids, prompt_attention_mask
    if temperature and temperature > 0 and seeds is not None:
        from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        if len(seeds) != prompt_input_ids.shape[0] * int(num_samples):
            raise ValueError(f"generate: {len(seeds)} seeds for {prompt_input_ids.shape[0] * int(num_samples)} rows")
        procs = [TemperatureLogitsWarper(float(temperature))]
        if top_k:
            procs.append(TopKLogitsWarper(int(top_k)))
        if top_p < 1:
            procs.append(TopPLogitsWarper(float(top_p)))
        procs.append(KeyedGumbelSampler(seeds))
        inputs = prompt_input_ids.repeat_interleave(int(num_samples), 0)  # [N, Tp]
        attn_in = prompt_attention_mask.repeat_interleave(int(num_samples), 0)  # [N, Tp]
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None, num_return_sequences=1,
                      logits_processor=LogitsProcessorList(procs))
    elif temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_k=int(top_k or 0), top_p=float(top_p))
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=inputs, attention_mask=attn_in, **kwargs)
    finally:
        model.train(was_training)
    B, Tp = prompt_input_ids.shape
    K = int(num_samples)
    resp = out[:, Tp:]  # [N, Tn]
    N, Tn = resp.shape
    is_stop = torch.isin(resp, torch.tensor(stops, device=resp.device))
    has_eos = is_stop.any(1)
    first = is_stop.int().argmax(1)
    resp_len = torch.where(has_eos, first + 1, torch.full_like(first, Tn))  # [N] incl. EOS
    pmask = prompt_attention_mask.repeat_interleave(K, 0).bool()
    pids = prompt_input_ids.repeat_interleave(K, 0)
    plen = pmask.sum(1)
    T = int((plen + resp_len).max())
    input_ids = torch.full((N, T), pad_id, dtype=torch.long, device=device)
    labels = torch.full((N, T), -100, dtype=torch.long, device=device)
    attn = torch.zeros((N, T), dtype=torch.long, device=device)
    completions = []
    for i in range(N):
        p, r = int(plen[i]), int(resp_len[i])
        input_ids[i, :p] = pids[i][pmask[i]]
        input_ids[i, p:p + r] = resp[i, :r]
        labels[i, p:p + r] = resp[i, :r]
        attn[i, :p + r] = 1
        content = resp[i, : r - 1] if bool(has_eos[i]) else resp[i, :r]
        completions.append(tokenizer.decode(content.tolist(), skip_special_tokens=True))
    if prompts is None:
        prompts = tokenizer.batch_decode(prompt_input_ids, skip_special_tokens=True)
    rows_prompts = [p for p in prompts for _ in range(K)]
    rows_refs = [r for r in references for _ in range(K)] if references is not None else None
    return Rollout(input_ids=input_ids, attention_mask=attn, labels=labels, prompt_lengths=plen,
                   response_lengths=resp_len, has_eos=has_eos, prompts=rows_prompts, completions=completions,
                   group_size=K, references=rows_refs)


def tokenize_prompts(prompts: Sequence, tokenizer: Any, data_cfg: Any) -> dict:
    """A left-padded ``prompt`` batch for raw prompts (str or chat messages), tokenised exactly as
    the data pipeline does (:func:`alignkit.data.tokenize.tokenize_example`, kind ``prompt``)."""
    from alignkit.data.collate import collate
    from alignkit.data.tokenize import tokenize_example

    feats = []
    for p in prompts:
        f = tokenize_example({"prompt": p, "reference": None}, "prompt", tokenizer, data_cfg)
        if f is None:
            raise ValueError(f"prompt could not be tokenised (too long for data.max_prompt_length?): {str(p)[:80]!r}")
        feats.append(f)
    return collate(feats, "prompt", tokenizer)


def generate_from_prompts(model: Any, tokenizer: Any, prompts: Sequence, data_cfg: Any, **kwargs: Any) -> Rollout:
    """:func:`generate` for raw prompts: :func:`tokenize_prompts`, then :func:`generate` with ``kwargs``."""
    batch = tokenize_prompts(prompts, tokenizer, data_cfg)
    device = next(model.parameters()).device
    return generate(model, tokenizer, batch["prompt_input_ids"].to(device), batch["prompt_attention_mask"].to(device),
                    prompts=list(prompts), **kwargs)
