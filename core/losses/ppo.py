"""Pure tensor functions of the online RLHF family: PPO, GRPO, RLOO.

Everything here takes tensors and returns tensors; nothing knows about models,
data or the training loop. The clipped policy/value losses, GAE and whitening
themselves are ops (:mod:`alignkit.ops`: ``ppo_loss``, ``value_loss``, ``gae``,
``masked_whiten``); this module holds the arithmetic around them, exactly as
``docs/algorithms.md`` states it:

* :func:`kl_per_token` -- the ``k1`` / ``k3`` estimators of KL(policy || reference).
* :func:`shape_rewards` -- InstructGPT per-token reward ``r_t = -kl_coef * kl_t``,
  plus the sequence score on the last response token.
* :func:`apply_missing_eos_penalty` -- subtract a penalty from the score of a
  response that never produced EOS (TRL's ``missing_eos_penalty`` convention).
* :class:`AdaptiveKLController` / :class:`FixedKLController` (Ziegler et al. 2019).
* :func:`explained_variance` -- value-function diagnostic over valid tokens.
* :func:`group_advantages` -- GRPO (Shao et al. 2024) group-normalised and
  RLOO (Ahmadian et al. 2024) leave-one-out advantages of sequence scores.
* :func:`sequence_kl` -- per-sequence sum of per-token KL (the KL metric and the
  RLOO sequence-level penalty).
* :class:`ScoreNormalizer` -- running mean and standard deviation of every score seen
  so far, to put scores in units of their spread before the KL penalty is applied
  (PPO and RLOO ``normalize_scores``).
* :func:`truncated_is_weights` / :func:`engine_gap_metrics` -- the gap between the trainer's
  and the rollout engine's log-probs of the sampled tokens, and the truncated importance
  sampling weights that correct for it (Yao et al. 2025).

All ``[B, T]`` tensors are aligned with :func:`alignkit.modeling.token_logprobs`:
entry ``t`` scores token ``t + 1`` of the sequence, and ``mask`` marks response
tokens (including the EOS that ends a response).
"""
from __future__ import annotations

import torch

__all__ = [
    "KL_ESTIMATORS", "kl_per_token", "shape_rewards", "apply_missing_eos_penalty", "last_valid_index",
    "AdaptiveKLController", "FixedKLController", "explained_variance", "group_advantages",
    "sequence_kl", "GROUP_ADVANTAGES", "masked_whiten_across", "ScoreNormalizer", "truncated_is_weights",
    "engine_gap_metrics",
]

KL_ESTIMATORS = ("k1", "k3")
GROUP_ADVANTAGES = ("grpo", "rloo")


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate ``[B, T]``, 0 where ``mask`` is False.

    ``k1 = logp - ref_logp`` (unbiased, can be negative); ``k3 = exp(d) - d - 1`` with
    ``d = ref_logp - logp`` (unbiased and never negative; Schulman's "approximating KL").

    Example: ``logp = -1, ref = -2`` gives ``k1 = 1`` and ``k3 = e^-1 + 1 - 1 = 0.3679``.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    if estimator == "k1":
        kl = logp - ref_logp
    else:
        d = ref_logp - logp
        kl = torch.expm1(d) - d
    return torch.where(mask.bool(), kl, torch.zeros_like(kl))


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True entry of each row of ``mask [B, T]`` (0 for an empty row)."""
    T = mask.shape[-1]
    pos = torch.arange(T, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), pos, torch.zeros_like(pos)).amax(-1)


def shape_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """InstructGPT per-token rewards ``[B, T]``.

    ``r_t = -kl_coef * kl_t`` on response tokens, plus ``scores[b]`` on the last
    response token of row ``b``; 0 elsewhere.

    Example: ``kl = [[0.5, 0.1, 0]]``, ``mask = [[1, 1, 0]]``, ``kl_coef = 0.2``,
    ``score = 1`` gives ``[[-0.1, -0.02 + 1, 0]] = [[-0.1, 0.98, 0]]``.
    """
    m = mask.bool()
    rewards = torch.where(m, -kl_coef * kl, torch.zeros_like(kl))
    last = last_valid_index(m)
    has_any = m.any(-1)
    add = torch.where(has_any, scores.to(rewards.dtype), torch.zeros_like(scores, dtype=rewards.dtype))
    return rewards.scatter_add(1, last.unsqueeze(1), add.unsqueeze(1))


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """``scores - penalty`` for responses that hit ``max_new_tokens`` without EOS.

    ``None`` (or 0) leaves scores unchanged. Example: ``scores = [1, 2]``,
    ``has_eos = [True, False]``, ``penalty = 1`` gives ``[1, 1]``.
    """
    if not penalty:
        return scores
    return scores - penalty * (~has_eos.bool()).to(scores.dtype)


def sequence_kl(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token KL over each row's valid tokens: ``[B, T] -> [B]``."""
    return (kl * mask.to(kl.dtype)).sum(-1)


class FixedKLController:
    """A constant KL coefficient (``adaptive_kl: false``)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019) proportional controller, as in algorithms.md.

    ``e = clip(KL / target - 1, -0.2, 0.2)``; ``kl_coef *= 1 + e * n_steps / horizon``,
    where ``KL`` is the mean per-sequence KL of the last rollout and ``n_steps`` the
    number of sequences it held.

    Example: coef 0.2, target 6, horizon 10000, KL 12, 64 sequences:
    ``e = clip(1, ...) = 0.2``; ``0.2 * (1 + 0.2 * 64 / 10000) = 0.200256``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        super().__init__(init_kl_coef)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


class ScoreNormalizer:
    """Running moments of sequence scores: ``(s - mean) / (std + eps)`` with the mean and the
    (population) standard deviation of *every* score seen so far, this batch included.

    The KL coefficients of PPO and RLOO are in units of the score. A reward whose scores
    spread by 0.02 (a rule reward in [0, 1]) against a coefficient of 0.05-0.2 per nat makes
    the KL term outweigh the reward by one to two orders of magnitude; normalised scores have
    unit spread whatever the reward, as the reward normalisation of Ziegler et al. (2019) gives.
    Moments are merged batch by batch (Chan et al.), in float64; ``all_reduce_sum`` sums a
    tensor over processes, so every process normalises with the same statistics.

    Example: batches ``[1, 3]`` then ``[5]``: after the first, mean 2, std 1 -> ``[-1, 1]``;
    after the second, mean 3, std ``sqrt(8/3) = 1.633`` -> ``5`` becomes ``1.2247``.
    """

    def __init__(self, eps: float = 1e-8):
        self.count, self.mean, self.m2, self.eps = 0.0, 0.0, 0.0, float(eps)

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count > 0 else 1.0

    def update(self, scores: torch.Tensor, all_reduce_sum=None) -> None:
        """Merge the scores ``[N]`` of this process (and, through ``all_reduce_sum``, of the others)."""
        x = scores.detach().to(torch.float64).reshape(-1)  # [N]
        reduce = all_reduce_sum or (lambda t: t)
        n_sum = reduce(torch.stack([x.new_tensor(float(x.numel())), x.sum()]))
        n = float(n_sum[0])
        if n == 0:
            return
        mean = float(n_sum[1]) / n
        m2 = float(reduce(((x - mean) ** 2).sum()))
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    def __call__(self, scores: torch.Tensor, all_reduce_sum=None) -> torch.Tensor:
        """Update with ``scores [N]``, then return them normalised ``[N]`` (same dtype)."""
        self.update(scores, all_reduce_sum)
        return ((scores.to(torch.float64) - self.mean) / (self.std + self.eps)).to(scores.dtype)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = float(state["count"]), float(state["mean"]), float(state["m2"])


def masked_whiten_across(x: torch.Tensor, mask: torch.Tensor, all_reduce_sum, eps: float = 1e-8) -> torch.Tensor:
    """:func:`alignkit.ops.masked_whiten` over the valid positions of every process's ``x`` together:
    ``all_reduce_sum`` sums a tensor over processes (``RunContext.all_reduce_sum``). ``x``, ``mask``
    ``[N, T]``; statistics accumulate in float64 (count, sum, then centred sum of squares)."""
    m = (mask != 0).to(torch.float64)  # [N, T]
    xd = x.to(torch.float64)
    n_sum = all_reduce_sum(torch.stack([m.sum(), (xd * m).sum()]))
    n = n_sum[0]
    mean = n_sum[1] / n.clamp(min=1)
    xc = (xd - mean) * m  # [N, T]
    var = all_reduce_sum((xc * xc).sum()) / (n - 1).clamp(min=1)
    return (xc * torch.rsqrt(var + eps)).to(x.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(returns - values) / Var(returns)`` over valid tokens (population variances).

    1 is a perfect value function, 0 no better than a constant, negative worse.
    Returns ``nan`` when the returns have no variance.
    Example: returns ``[1, 2, 3]``, values ``[1, 2, 2]``: residual ``[0, 0, 1]``,
    Var = 2/9 vs 2/3, so ``1 - 1/3 = 0.6667``.
    """
    m = mask.bool()
    r = returns[m].double()
    v = values[m].double()
    if r.numel() == 0:
        return float("nan")
    var_r = r.var(unbiased=False)
    if var_r == 0:
        return float("nan")
    return float(1.0 - (r - v).var(unbiased=False) / var_r)


def group_advantages(scores: torch.Tensor, group_size: int, kind: str = "grpo", *,
                     scale_by_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Sequence-level advantages of ``scores [N]`` laid out as ``N / group_size`` consecutive groups
    of samples of the same prompt.

    * ``grpo``: ``(s_i - mean_g) / (std_g + eps)`` with the unbiased group std (``scale_by_std:
      false`` drops the division, as Dr. GRPO recommends).
      Example: group ``[1, 2, 3]``: mean 2, std 1 -> ``[-1, 0, 1] / 1.0001``.
    * ``rloo``: ``s_i - mean_{j != i} s_j = K / (K - 1) * (s_i - mean_g)``.
      Example: group ``[1, 2, 3]`` -> ``[1 - 2.5, 2 - 2, 3 - 1.5] = [-1.5, 0, 1.5]``.
    """
    if kind not in GROUP_ADVANTAGES:
        raise ValueError(f"group advantage must be one of {GROUP_ADVANTAGES}, got {kind!r}")
    K = int(group_size)
    if K < 2 or scores.numel() % K:
        raise ValueError(f"need groups of at least 2 samples dividing {scores.numel()} scores, got group_size={K}")
    s = scores.reshape(-1, K).to(torch.float32 if scores.dtype != torch.float64 else torch.float64)
    centred = s - s.mean(-1, keepdim=True)
    if kind == "rloo":
        adv = centred * (K / (K - 1))
    elif scale_by_std:
        adv = centred / (s.std(-1, keepdim=True) + eps)
    else:
        adv = centred
    return adv.reshape(-1)


@torch.no_grad()
def truncated_is_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor,
                         cap: float | None) -> torch.Tensor:
    """Truncated importance sampling weights ``[B, T]`` (Yao et al. 2025) for tokens sampled by a
    rollout engine whose probabilities differ from the trainer's: ``w_t = min(exp(old_logp_t -
    engine_logp_t), cap)`` (no cap when ``cap`` is None), 0 where ``mask`` is False; no gradient.

    ``old_logp`` is the trainer's log-prob of the sampled token when it was sampled. Since
    ``w_t > 0``, multiplying the advantage ``A_t`` by ``w_t`` multiplies the clipped surrogate
    ``max(-A_t r_t, -A_t clip(r_t))`` by ``w_t`` exactly. Example: ``old = [-1, -2]``,
    ``engine = [-1.5, -0.5]``, cap 1.5: ``[min(e^0.5, 1.5), e^-1.5] = [1.5, 0.2231]``.
    """
    w = torch.exp(old_logp.float() - engine_logp.float())  # [B, T]
    if cap is not None:
        w = w.clamp(max=float(cap))
    return torch.where(mask.bool(), w, torch.zeros_like(w))


@torch.no_grad()
def engine_gap_metrics(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor,
                       cap: float | None = None) -> dict[str, float]:
    """How far the rollout engine's log-probs are from the trainer's, over ``mask``'s tokens:
    ``rollout/logprob_gap_abs`` = mean ``|old_logp - engine_logp|`` and ``rollout/tis_weight`` = mean
    :func:`truncated_is_weights` (with ``cap``). Example: ``old = [-1, -2]``, ``engine = [-1.5, -0.5]``:
    gap ``(0.5 + 1.5) / 2 = 1``; with cap 1.5 the weight ``(1.5 + 0.2231) / 2 = 0.8616``."""
    m = mask.bool()
    n = m.sum().clamp(min=1)
    diff = (old_logp.float() - engine_logp.float()).abs()  # [B, T]
    gap = torch.where(m, diff, torch.zeros_like(diff))
    w = truncated_is_weights(old_logp, engine_logp, m, cap)
    return {"rollout/logprob_gap_abs": float(gap.sum() / n), "rollout/tis_weight": float(w.sum() / n)}
