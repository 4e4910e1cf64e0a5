"""PRO: Preference Ranking Optimization (Song et al. 2023, "Preference Ranking
Optimization for Human Alignment", arXiv:2306.17492; reference code
github.com/AlibabaResearch/DAMO-ConvAI/tree/main/PRO).

Per prompt, ``n`` candidates are sorted by reward, best first:
``r_0 > r_1 > ... > r_{n-1}``. With ``s_k`` the *mean* log-prob of candidate ``k``
under the policy and ``S_0`` the *sum* log-prob of the best one::

    for k = 0 .. n-2:
        T_i = r_k - r_i                  for i > k      (reward-gap temperatures)
        T_k = max_{i>k} T_i
        L_k = logsumexp(s_k*T_k, {s_i*T_i}_{i>k}) - s_k*T_k
    L_rank = sum_k L_k                                  (mean over the batch)
    L_sft  = sft_weight * (n-1)^2 * (-S_0)              (mean over the batch)
    loss   = L_rank + L_sft

Conventions chosen here (``docs/algorithms.md`` is the contract):

* Mean log-probs in the ranking term, the sum in the SFT term, as in the paper's code.
* ``n`` is the number of *valid* candidates of that prompt (lists may be padded with
  ``valid=False``); a prompt with fewer than two valid candidates adds no ranking
  term. The ``(n-1)^2`` weight uses each prompt's own ``n``.
* Ties among a prompt's valid rewards make some temperature 0 (and ``T_k`` 0 when the
  whole tail ties with ``k``), which silently drops candidates: they raise
  ``ValueError`` unless ``constant_temperature=True``, where every ``T = 1`` and tied
  candidates keep their input order (stable sort).
* Rewards are data: no gradient flows through the temperatures.

With ``n = 2`` the loss is a Bradley-Terry loss on mean log-probs scaled by the
reward gap: ``L_0 = -log sigmoid((r_0 - r_1) * (s_0 - s_1))``.
"""
from __future__ import annotations

import torch

from alignkit.losses._lists import check_lists

__all__ = ["pro_loss"]


def pro_loss(
    mean_logps: torch.Tensor,
    sum_logps: torch.Tensor,
    rewards: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    sft_weight: float = 0.05,
    constant_temperature: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PRO loss of a batch of ranked lists.

    Args:
        mean_logps: ``[B, K]`` policy mean log-prob per response token, ``s``.
        sum_logps: ``[B, K]`` policy summed log-prob, ``S`` (only the best one is used).
        rewards: ``[B, K]`` scores; any order (sorted here, descending).
        valid: ``[B, K]`` bool, False for list padding (default: all valid).
        sft_weight: coefficient of the ``(n-1)^2``-scaled NLL of the best response.
        constant_temperature: every temperature 1 (allows ties).

    Returns:
        ``(loss, metrics)`` with metrics ``loss``, ``loss/rank``, ``loss/sft``,
        ``rank_accuracy`` (fraction of ordered pairs whose mean log-probs follow the
        rewards) and ``logps/best_mean``, all detached.

    Example (one prompt, n = 3, r = [2, 1, 0], s = [-1, -2, -3], constant T off):
        k=0: T_1 = 1, T_2 = 2, T_0 = 2 -> logits [-2, -2, -6],
             L_0 = log(2e^-2 + e^-6) + 2 = log(2 + e^-4) = 0.70226;
        k=1: T_2 = 1, T_1 = 1 -> logits [-2, -3], L_1 = log(1 + e^-1) = 0.31326;
        L_rank = 1.01553.
    """
    valid = check_lists(valid, mean_logps=mean_logps, sum_logps=sum_logps, rewards=rewards)
    B, K = rewards.shape
    r = rewards.detach().to(mean_logps.dtype)
    # Padding may carry NaN means (0 tokens); keep it out of the graph.
    mean_logps = torch.where(valid, mean_logps, torch.zeros_like(mean_logps))
    sum_logps = torch.where(valid, sum_logps, torch.zeros_like(sum_logps))

    # Sort best first; padding goes last (stable, so ties keep input order).
    key = torch.where(valid, r, torch.full_like(r, float("-inf")))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # [B, K]
    r = r.gather(1, order)
    s = mean_logps.gather(1, order)
    S = sum_logps.gather(1, order)
    v = valid.gather(1, order)
    n = v.sum(1)  # [B] valid candidates per prompt

    pair_valid = v[:, 1:] & v[:, :-1]
    if not constant_temperature and bool((pair_valid & (r[:, 1:] == r[:, :-1])).any()):
        rows = torch.nonzero((pair_valid & (r[:, 1:] == r[:, :-1])).any(1)).flatten().tolist()
        raise ValueError(
            f"PRO: tied rewards within a ranked list (batch rows {rows}) make the reward-gap temperatures "
            f"degenerate; de-duplicate the scores or set algo.constant_temperature=true"
        )

    idx = torch.arange(K, device=r.device)
    later = idx.view(1, K) > idx.view(K, 1)  # [K(k), K(i)]: i > k
    tail = later.unsqueeze(0) & v.unsqueeze(1) & v.unsqueeze(2)  # [B, k, i] valid i > k, k valid
    if constant_temperature:
        T = torch.ones(B, K, K, dtype=s.dtype, device=s.device)
    else:
        T = r.unsqueeze(2) - r.unsqueeze(1)  # [B, k, i] = r_k - r_i
    T_tail = torch.where(tail, T, torch.zeros_like(T))
    T_k = T_tail.amax(dim=2)  # [B, k]; > 0 wherever row k has a tail (no ties)
    has_tail = tail.any(2)  # [B, k]: k = 0 .. n-2

    neg_inf = torch.full_like(T, float("-inf"))
    z_tail = torch.where(tail, s.unsqueeze(1) * T, neg_inf)  # [B, k, i]
    z_k = s * T_k  # [B, k]
    z = torch.cat([z_k.unsqueeze(2), z_tail], dim=2)  # [B, k, 1 + K]
    L = torch.logsumexp(z, dim=2) - z_k  # [B, k]
    L = torch.where(has_tail, L, torch.zeros_like(L))
    rank = L.sum(1)  # [B]

    nm1 = (n - 1).clamp(min=0).to(s.dtype)
    sft = sft_weight * nm1.pow(2) * (-S[:, 0])  # [B]; S[:, 0] is the best valid candidate
    sft = torch.where(n > 0, sft, torch.zeros_like(sft))

    loss_rank = rank.mean()
    loss_sft = sft.mean()
    loss = loss_rank + loss_sft

    with torch.no_grad():
        # Ordered pairs (k better than i) among valid candidates with a strict reward gap.
        strict = tail & (r.unsqueeze(2) > r.unsqueeze(1))
        correct = (s.unsqueeze(2) > s.unsqueeze(1)) & strict
        npairs = strict.sum()
        acc = correct.sum().float() / npairs.clamp(min=1).float()
        best = torch.where(n > 0, s[:, 0], torch.zeros_like(s[:, 0])).sum() / (n > 0).sum().clamp(min=1)
    metrics = {
        "loss": loss.detach(),
        "loss/rank": loss_rank.detach(),
        "loss/sft": loss_sft.detach(),
        "rank_accuracy": acc,
        "logps/best_mean": best.detach(),
    }
    return loss, metrics
