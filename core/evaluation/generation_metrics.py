"""Metrics of generated responses: distinct-n, length, EOS rate, sequence KL, win rate.

Everything here is a plain function of strings, tensors or lists of scores, so each can be
checked on hand-computed examples (tests/evaluation/test_eval_metrics.py).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from alignkit.evaluation.preference import compare
from alignkit.evaluation.spec import EvalMetricSpec

__all__ = ["distinct_n", "sequence_kl", "win_rate", "response_stats", "BUILTIN_METRICS"]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over every response
    together (words split on whitespace, case kept). 0.0 when the responses hold no n-gram.

    Example: ``["a b a b", "a b"]``, n=2 -> n-grams (a b), (b a), (a b), (a b): 2 unique of 4 = 0.5.
    """
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sequence_kl(policy_logp: torch.Tensor, reference_logp: torch.Tensor) -> float:
    """Sequence KL(policy || reference), the k1 Monte Carlo estimate on the policy's samples:
    mean over samples of ``sum_t log pi(y_t | ...) - log pi_ref(y_t | ...)``.

    ``policy_logp``, ``reference_logp``: ``[N]`` summed response-token log-probs of the same N
    policy samples. Unbiased for the KL when the samples are drawn from the policy itself
    (temperature 1, no top-k/top-p); single samples may be negative.
    """
    if policy_logp.shape != reference_logp.shape or policy_logp.dim() != 1:
        raise ValueError(f"sequence_kl wants two [N] tensors, got {tuple(policy_logp.shape)} and "
                         f"{tuple(reference_logp.shape)}")
    return float((policy_logp.double() - reference_logp.double()).mean()) if policy_logp.numel() else float("nan")


def win_rate(policy_scores: torch.Tensor, reference_scores: torch.Tensor) -> dict:
    """The policy's win rate against the reference, prompt by prompt (``[N]`` scores each): a higher
    score wins, a tie counts 0.5; with its 95% Wilson interval (see :func:`preference.compare`)."""
    return compare(policy_scores, reference_scores)


def response_stats(response_lengths: torch.Tensor, has_eos: torch.Tensor) -> dict[str, float]:
    """Mean response length in tokens (the stop token counted, as ``Rollout.response_lengths``) and
    the fraction of responses that ended with a stop token before ``max_new_tokens``.
    ``response_lengths``: ``[N]`` int, ``has_eos``: ``[N]`` bool."""
    return {"length_tokens": float(response_lengths.double().mean()), "eos_rate": float(has_eos.double().mean())}


def _distinct(prompts: Sequence, policy: Sequence[str], reference: Optional[Sequence[str]]) -> dict[str, float]:
    out = {"policy_distinct_1": distinct_n(policy, 1), "policy_distinct_2": distinct_n(policy, 2)}
    if reference is not None:
        out |= {"reference_distinct_1": distinct_n(reference, 1), "reference_distinct_2": distinct_n(reference, 2)}
    return out


#: built-in generation metrics, registered by the ``core`` plugin through ``alignkit_register_eval_metrics``
BUILTIN_METRICS = [EvalMetricSpec("distinct", _distinct,
                                  "distinct-1 / distinct-2: unique word n-grams / all n-grams over all responses")]
