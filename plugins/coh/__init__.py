"""``algo=coh``: Chain of Hindsight (Liu, Sferrazza and Abbeel 2023, arXiv:2302.02676).

Preference pairs become feedback sequences (``User: {prompt} A helpful answer: {chosen}``,
``... An unhelpful answer: {rejected}``, and both chained in either order; see
:mod:`alignkit.plugins.coh.data`); the policy is trained with next-token NLL on the response
tokens only (:func:`alignkit.losses.coh.coh_loss`), with a forgetful causal mask
hiding a random ``U(0, fcm_max_ratio)`` share of past tokens from attention.

Batches: the algorithm reads ``preference`` data and overrides :meth:`CoH.tokenize` /
:meth:`CoH.collate`, so every batch carries the feedback sequence (``input_ids``,
``attention_mask``, ``labels`` ``[B, T]``), the pair after the helpful-answer prompt
(``chosen_*`` / ``rejected_*``, used by evaluation) and, with ``lm_weight > 0``, a plain
SFT rendering of the chosen response (``lm_*``).

Evaluation: ``accuracy`` is the held-out preference accuracy of the pair prompted with
``User: {prompt} A helpful answer:`` (chosen above rejected by mean log-prob); ``loss`` is
the feedback NLL without the forgetful mask. :meth:`CoH.generate` samples answers with that
prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

import torch

from alignkit import AlgorithmSpec, hookimpl
from alignkit.api import (Algorithm, check, preference_accuracy, sequence_logprobs, stacked_pairs,
                          token_logprobs)
from .data import (
    FORMS,
    CohTemplate,
    choose_form,
    forgetful_causal_mask,
    generation_prompt,
    normalise_pair,
    tokenize_eval_pair,
    tokenize_feedback,
)
from alignkit.losses import coh_loss

PAPER = "Liu, Sferrazza, Abbeel 2023, Chain of Hindsight Aligns Language Models with Feedback (arXiv:2302.02676)"


@dataclass
class CohConfig:
    forms: List[str] = field(default_factory=lambda: list(FORMS))  #: feedback forms, one drawn per example
    user_template: str = "User: {prompt}"  #: text before the first marker
    good_marker: str = "A helpful answer:"  #: marker before the chosen response (and the generation prompt)
    bad_marker: str = "An unhelpful answer:"  #: marker before the rejected response
    fcm_max_ratio: float = 0.05  #: forgetful causal mask: share of past tokens hidden ~ U(min, max); 0 = off
    fcm_min_ratio: float = 0.0  #: lower end of that share
    lm_weight: float = 0.0  #: weight of a plain SFT term on the chosen responses (0 = off)
    form_seed: int = 0  #: seed of the per-example form choice
    eval_samples: int = 0  #: at each evaluation, greedy answers for this many held-out prompts -> coh_samples.jsonl
    eval_max_new_tokens: int = 48  #: length cap of those answers

    def __post_init__(self) -> None:
        check(self, fcm_max_ratio="in [0, 1)", fcm_min_ratio="in [0, 1)", lm_weight=">= 0", eval_samples=">= 0",
              eval_max_new_tokens=">= 1")


_PAIR_KEYS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "margin")


class CoH(Algorithm):
    data_kind = "preference"
    eval_data_kind = "preference"
    needs_reference = False

    def __init__(self, cfg: Any, run: Any):
        super().__init__(cfg, run)
        bad = [f for f in cfg.forms if f not in FORMS]
        if bad or not cfg.forms:
            raise ValueError(f"algo.forms must be a non-empty subset of {list(FORMS)}, got {list(cfg.forms)}")
        self._template = CohTemplate(cfg.user_template, cfg.good_marker, cfg.bad_marker)
        self.generator = torch.Generator().manual_seed(int(run.cfg.trainer.seed))

    # -- data -------------------------------------------------------------------------------
    def tokenize(self, example: dict) -> dict | None:
        tok, max_len = self.run.tokenizer, int(self.run.cfg.data.max_length)
        example = normalise_pair(example)
        form = choose_form(example, self.cfg.forms, self.cfg.form_seed)
        feat = tokenize_feedback(example, tok, max_len, form, self._template)
        pair = tokenize_eval_pair(example, tok, max_len, self._template)
        if feat is None or pair is None:
            return None
        feat.update(pair)
        feat["generation_prompt"] = generation_prompt(example["prompt"], self._template) \
            if self.cfg.eval_samples else None
        if self.cfg.lm_weight:
            from alignkit.api import tokenize_example

            lm = tokenize_example({"prompt": example["prompt"], "completion": example["chosen"]}, "sft", tok,
                                  self.run.cfg.data)
            if lm is None:
                return None
            feat["lm_input_ids"], feat["lm_labels"] = lm["input_ids"], lm["labels"]
        return feat

    def collate(self, features: list[dict], kind: str | None = None) -> dict:
        from alignkit.api import collate

        tok = self.run.tokenizer
        out = collate([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features], "sft", tok)
        out.update(collate([{k: f[k] for k in _PAIR_KEYS} for f in features], "preference", tok))
        out["generation_prompts"] = [f.get("generation_prompt") for f in features]
        if "lm_input_ids" in features[0]:
            lm = collate([{"input_ids": f["lm_input_ids"], "labels": f["lm_labels"]} for f in features], "sft", tok)
            out.update({f"lm_{k}": v for k, v in lm.items()})
        return out

    # -- loss -------------------------------------------------------------------------------
    def _token_logprobs(self, ids, am, labels, fcm: bool):
        dev = self.run.device
        ids, am, labels = ids.to(dev), am.to(dev), labels.to(dev)
        if fcm and self.cfg.fcm_max_ratio > 0:
            dtype = next(self.run.policy.parameters()).dtype
            am = forgetful_causal_mask(am, self.cfg.fcm_max_ratio, min_ratio=self.cfg.fcm_min_ratio,
                                       generator=self.generator, dtype=dtype)
        fused = bool(self.run.cfg.model.get("fused_logprobs", True))
        return token_logprobs(self.run.policy, ids, am, labels, fused=fused)

    def _loss(self, batch: dict, fcm: bool):
        logp, mask = self._token_logprobs(batch["input_ids"], batch["attention_mask"], batch["labels"], fcm)
        lm_logp = lm_mask = None
        if self.cfg.lm_weight and "lm_input_ids" in batch:
            lm_logp, lm_mask = self._token_logprobs(batch["lm_input_ids"], batch["lm_attention_mask"],
                                                    batch["lm_labels"], fcm)
        return coh_loss(logp, mask, lm_token_logps=lm_logp, lm_mask=lm_mask, lm_weight=self.cfg.lm_weight)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        return self._loss(batch, fcm=self.run.policy.training)

    def evaluate(self, batch: dict) -> dict[str, float]:
        dev = self.run.device
        with torch.no_grad():
            loss, metrics = self._loss(batch, fcm=False)
            ids, am, lab = (t.to(dev) for t in stacked_pairs(batch, "input_ids", "attention_mask", "labels"))  # [2B, T]
            fused = bool(self.run.cfg.model.get("fused_logprobs", True))
            mean = sequence_logprobs(self.run.policy, ids, am, lab, fused=fused)["mean"]
        B = batch["chosen_input_ids"].shape[0]
        self._maybe_write_samples(batch.get("generation_prompts") or [])
        out = {k: float(v) for k, v in metrics.items()}
        out.update({
            "loss": float(loss),
            "preference_accuracy": preference_accuracy(mean[:B], mean[B:]),
            "logps/chosen_mean": float(mean[:B].mean()),
            "logps/rejected_mean": float(mean[B:].mean()),
        })
        return out

    # -- generation -------------------------------------------------------------------------
    def _maybe_write_samples(self, gen_prompts: list) -> None:
        """On the first held-out batch of each evaluation, sample answers for ``eval_samples``
        prompts with the helpful-answer prompt and append them to ``<run>/coh_samples.jsonl``."""
        n = int(self.cfg.eval_samples)
        if n <= 0 or not gen_prompts or gen_prompts[0] is None or not self.run.is_main_process:
            return
        first = getattr(self, "_first_eval_prompt", None)
        if first is None:
            self._first_eval_prompt = first = gen_prompts[0]
        if gen_prompts[0] != first:  # not the first batch of this evaluation
            return
        import json

        self._evaluations = getattr(self, "_evaluations", 0) + 1
        texts = list(gen_prompts[:n])
        answers = self.generate(texts, already_formatted=True, max_new_tokens=int(self.cfg.eval_max_new_tokens),
                                temperature=0.0)
        with open(self.run.output_dir / "coh_samples.jsonl", "a") as f:
            for p, a in zip(texts, answers):
                f.write(json.dumps({"evaluation": self._evaluations, "prompt": p, "answer": a}) + "\n")

    def generate(self, prompts: list, already_formatted: bool = False, **sampling) -> list[str]:
        """Answers sampled with the ``User: {prompt} A helpful answer:`` prompt (``sampling``:
        keyword arguments of :func:`alignkit.rollout.generation.generate`; ``already_formatted``:
        the prompts are that text already)."""
        from alignkit.api import pad_sequences as pad
        from alignkit.api import generate

        tok = self.run.tokenizer
        texts = list(prompts) if already_formatted else [generation_prompt(p, self._template) for p in prompts]
        keep = int(self.run.cfg.data.max_prompt_length)
        enc = [tok(t, add_special_tokens=False)["input_ids"][-keep:] for t in texts]
        T = max(len(e) for e in enc)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = pad(enc, pad_id, T, left=True).to(self.run.device)
        am = pad([[1] * len(e) for e in enc], 0, T, left=True).to(self.run.device)
        return generate(self.run.policy, tok, ids, am, prompts=texts, **sampling).completions


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("coh", CohConfig, CoH, "Chain of Hindsight: NLL on feedback-annotated response pairs",
                          PAPER)]
