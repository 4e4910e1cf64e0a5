"""``algo=grpo`` and ``algo=rloo``: group-relative policy optimisation without a value model.

Both sample a group of ``num_samples`` responses per prompt and turn the group's
scores into one advantage per response, broadcast over its tokens; the policy loss is
the clipped surrogate of ``alignkit.ops.ppo_loss`` (with one epoch and one minibatch
the ratio is 1 and it is plain REINFORCE with a baseline).

* GRPO (Shao et al. 2024, DeepSeekMath): ``A_i = (s_i - mean_g) / (std_g + 1e-4)``
  (``scale_rewards: false`` drops the std, as in Dr. GRPO); KL to the reference as a
  loss term ``beta * k3`` per token (``beta: 0`` skips the reference in the loss).
* RLOO (Ahmadian et al. 2024): the sequence reward ``s_i - kl_coef * sum_t k1_t`` with
  the leave-one-out baseline ``A_i = R_i - mean_{j != i} R_j``; with ``normalize_scores`` the
  score ``s_i`` is first put in units of the running score spread (as in PPO).

Options both share (:class:`GroupConfig`, ``docs/algorithms.md`` states each formula):

* ``agg: seq-mean-token-sum-norm`` -- Dr. GRPO's constant length normaliser (Liu et al. 2025):
  token losses summed and divided by ``generation.max_new_tokens`` times the number of sequences.
* DAPO (Yu et al. 2025): ``dynamic_sampling`` / ``max_resample`` resample the groups whose scores
  are all equal and drop those still equal from the loss (:meth:`GroupRelative.sample_groups`);
  ``overlong_filter`` leaves truncated responses out of the loss; ``overlong_buffer`` /
  ``overlong_penalty`` add the soft length penalty (:func:`overlong_shaping`) to the scores.
* GSPO (Zheng et al. 2025): ``importance: sequence`` clips the length-normalised sequence ratio
  (:func:`gspo_loss`) with its own ``seq_clip_eps`` / ``seq_clip_eps_high``.
* TIS (Yao et al. 2025): ``tis_cap`` weights each token's policy-gradient term by the truncated
  ratio of the trainer's to the rollout engine's probability of the sampled token.

KL to the reference (k1, summed over the response, mean over sequences) is reported
as ``rollout/kl`` by both.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch
from omegaconf import OmegaConf

from alignkit import AlgorithmSpec, hookimpl, ops
from alignkit.api import (
    check, MetricMeans, minibatches, OnlineAlgorithm, RewardConfig, Rollout, SamplingConfig, UserError,
)
from alignkit.losses import (
    engine_gap_metrics, group_advantages, kl_per_token, ScoreNormalizer, sequence_kl, truncated_is_weights,
)

#: Dr. GRPO's aggregation: ``sum of token losses / (generation.max_new_tokens * sequences)``
CONSTANT_AGG = "seq-mean-token-sum-norm"
AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", CONSTANT_AGG)


@dataclass
class GroupConfig:
    generation: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    num_samples: int = 4  # group size: responses per prompt (>= 2)
    epochs: int = 1  # passes over each rollout
    num_minibatches: int = 1  # minibatches per pass (each one optimiser step)
    forward_batch_size: int = 16  # rows per no-grad forward
    clip_eps: float = 0.2  # policy ratio clip ε
    clip_eps_high: Optional[float] = None  # upper clip (default ε; DAPO's clip-higher uses e.g. 0.28)
    entropy_coef: float = 0.0  # entropy bonus weight
    agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    importance: str = "token"  # token (per-token ratio) | sequence (GSPO: length-normalised sequence ratio)
    seq_clip_eps: float = 3e-4  # GSPO lower clip of the sequence ratio (importance=sequence)
    seq_clip_eps_high: float = 4e-4  # GSPO upper clip of the sequence ratio (importance=sequence)
    dynamic_sampling: bool = False  # DAPO: resample groups whose scores are all equal
    max_resample: int = 2  # resampling rounds; groups still all equal are then left out of the loss
    overlong_filter: bool = False  # DAPO: responses cut at max_new_tokens (no EOS) are left out of the loss
    overlong_buffer: int = 0  # DAPO soft overlong penalty over the last L_c tokens before max_new_tokens (0 = off)
    overlong_penalty: float = 1.0  # score penalty at max_new_tokens (linear from 0 over the buffer)
    tis_cap: Optional[float] = None  # truncated importance sampling cap C on trainer/engine ratios (null = off)
    log_samples: int = 4  # responses written to samples.jsonl per iteration

    def __post_init__(self) -> None:
        check(self, num_samples=">= 2", epochs=">= 1", num_minibatches=">= 1", forward_batch_size=">= 1",
              clip_eps="> 0", clip_eps_high="> 0", entropy_coef=">= 0", agg=f"one of {'|'.join(AGGS)}",
              importance="one of token|sequence", seq_clip_eps="in (0, 1)", seq_clip_eps_high="> 0",
              max_resample=">= 0", overlong_buffer=">= 0", overlong_penalty=">= 0", tis_cap="> 0",
              log_samples=">= 0")


@dataclass
class GRPOConfig(GroupConfig):
    beta: float = 0.04  # weight of the per-token k3 KL to the reference in the loss
    scale_rewards: bool = True  # divide by the group's std (false: Dr. GRPO)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, beta=">= 0")


@dataclass
class RLOOConfig(GroupConfig):
    kl_coef: float = 0.05  # sequence-level k1 KL penalty subtracted from the score
    normalize_scores: bool = True  # scores -> (s - running mean) / running std before the KL penalty

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, kl_coef=">= 0")


# -- pure pieces ------------------------------------------------------------------------------
def overlong_shaping(lengths: torch.Tensor, max_len: int, buffer: int, penalty: float) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the scores: with
    ``L_max = max_len`` and ``L_c = buffer``, a response of ``L`` tokens (EOS included) gets 0 when
    ``L <= L_max - L_c``, ``((L_max - L_c) - L) / L_c * penalty`` up to ``L_max`` and ``-penalty``
    beyond. ``lengths [N] -> [N]`` float32. Example: ``L_max = 8``, ``L_c = 4``, penalty 1:
    lengths ``[3, 4, 6, 8]`` -> ``[0, 0, -0.5, -1]``."""
    over = lengths.to(torch.float32) - float(max_len - buffer)  # [N]
    return (-over.clamp(min=0) / float(buffer)).clamp(min=-1.0) * float(penalty)


def zero_spread_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[N] -> [N / group_size]`` bool: True for each group whose scores are all equal (its
    group-relative advantages are all zero, so it carries no policy-gradient signal)."""
    s = scores.reshape(-1, group_size)  # [G, K]
    return s.amax(-1) == s.amin(-1)


def group_rows(groups: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rollout rows of ``groups [g]``: ``[g * group_size]``, each group's samples consecutive."""
    return (groups.unsqueeze(1) * group_size + torch.arange(group_size, device=groups.device)).reshape(-1)


def prompt_subsets(micro_batches: list[dict], groups: torch.Tensor) -> list[dict]:
    """The prompts ``groups`` (indices into the micro-batches' prompts, concatenated in order) as
    prompt micro-batches: each micro-batch's selected rows, leading all-padding columns dropped;
    micro-batches with none selected are left out."""
    out, offset = [], 0
    wanted = set(groups.tolist())
    for b in micro_batches:
        n = b["prompt_input_ids"].shape[0]
        local = [i - offset for i in range(offset, offset + n) if i in wanted]
        offset += n
        if not local:
            continue
        idx = torch.tensor(local, dtype=torch.long)
        sub = {}
        for k, v in b.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n:
                sub[k] = v[idx.to(v.device)]
            elif isinstance(v, list) and len(v) == n:
                sub[k] = [v[i] for i in local]
            else:
                sub[k] = v
        first = int((sub["prompt_attention_mask"].sum(0) > 0).nonzero()[0])  # left padded: first used column
        sub["prompt_input_ids"] = sub["prompt_input_ids"][:, first:]
        sub["prompt_attention_mask"] = sub["prompt_attention_mask"][:, first:]
        out.append(sub)
    return out


#: padding of a rollout's ``[N, T]`` fields where a row is shorter than the widest
_ROW_PAD = {"attention_mask": 0, "labels": -100, "engine_logprobs": 0.0}


def replace_rows(ro: Rollout, rows: torch.Tensor, new: Rollout, pad_id: int) -> Rollout:
    """``ro`` with rows ``rows [n]`` replaced by the ``n`` rows of ``new`` (in order). Per-row
    tensors and lists are overwritten; ``[N, T]`` (and ``[N, T-1]``) tensors are first right-padded
    to the wider of the two rollouts (``pad_id`` for ids, 0 / -100 elsewhere). A field one of the
    two lacks (``None``) is ``None`` in the result."""
    idx = rows.tolist()
    out = {}
    for f in fields(ro):
        a, b = getattr(ro, f.name), getattr(new, f.name)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.dim() == 2:
                width = max(a.shape[1], b.shape[1])
                pad = _ROW_PAD.get(f.name, pad_id)
                a = torch.nn.functional.pad(a, (0, width - a.shape[1]), value=pad)
                b = torch.nn.functional.pad(b, (0, width - b.shape[1]), value=pad)
            a = a.clone()
            a[rows.to(a.device)] = b.to(a.device, a.dtype)
            out[f.name] = a
        elif isinstance(a, list) and isinstance(b, list):
            a = list(a)
            for i, v in zip(idx, b):
                a[i] = v
            out[f.name] = a
        elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            out[f.name] = None
    return replace(ro, **out)


def gspo_token_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO-token ratio ``[N, T]`` (Zheng et al. 2025, eq. 9): on every token of row ``i`` its value is
    the sequence ratio ``s_i = exp(mean_t (logp_t - old_logp_t))`` over the row's ``mask`` tokens, and
    its gradient is ``s_i * grad logp_t`` (``sg[s_i] * pi(y_t) / sg[pi(y_t)]``). Averaged over a row's
    tokens it has the gradient of ``s_i`` itself."""
    m = mask.to(logp.dtype)  # [N, T]
    log_s = ((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1)  # [N]
    return torch.exp(log_s.detach()).unsqueeze(1) * torch.exp(logp - logp.detach())  # [N, T]


def gspo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              clip_eps: float, clip_eps_high: float, ref_logprobs: torch.Tensor | None = None, kl_coef: float = 0.0,
              entropy: torch.Tensor | None = None, entropy_coef: float = 0.0, agg: str = "seq-mean-token-mean"):
    """The clipped surrogate of ``ops.ppo_loss`` with the GSPO-token ratio (:func:`gspo_token_ratio`) in
    place of the per-token ratio: per token ``pg_t = max(-A_t r_t, -A_t clip(r_t, 1 - clip_eps,
    1 + clip_eps_high))``, plus ``kl_coef * k3_t`` against ``ref_logprobs`` and ``- entropy_coef * H_t``,
    reduced by ``agg`` (``seq-mean-token-mean`` gives GSPO's ``-(1/G) sum_i min(s_i A_i, clip(s_i) A_i)``
    for sequence advantages). ``[N, T]`` tensors; returns ``(loss, stats)`` with the stats of ``ppo_loss``
    (``clipfrac``: share of tokens whose sequence ratio is clipped)."""
    m = mask.to(logp.dtype)  # [N, T]
    ratio = gspo_token_ratio(logp, old_logp, mask)  # [N, T]
    pg1 = -advantages * ratio
    pg2 = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps_high)
    per_tok = torch.maximum(pg1, pg2)  # [N, T]
    kl = torch.zeros_like(logp)
    if ref_logprobs is not None:
        kl = kl_per_token(logp, ref_logprobs, mask, "k3")
        per_tok = per_tok + kl_coef * kl
    if entropy is not None:
        per_tok = per_tok - entropy_coef * entropy
    loss = ops.reference.masked_agg(per_tok, m, agg)

    def mean(x):
        return (x.detach() * m).sum() / m.sum().clamp(min=1)

    stats = {"clipfrac": mean((pg2 > pg1).to(m.dtype)), "approx_kl": mean(0.5 * (logp - old_logp) ** 2),
             "kl": mean(kl), "entropy": mean(entropy if entropy is not None else torch.zeros_like(logp))}
    return loss, stats


def engine_logprobs(ro: Rollout, run, tis_cap: float) -> torch.Tensor:
    """``ro.engine_logprobs`` for ``algo.tis_cap``, or a one-line error naming the rollout engine when it
    reported none."""
    if ro.engine_logprobs is None:
        engine = OmegaConf.select(run.cfg, "rollout.engine", default=None) or "hf"
        raise UserError(f"algo.tis_cap={tis_cap} needs the rollout engine's log-probs of the sampled tokens, but "
                        f"rollout.engine={engine} reports none",
                        "use a rollout.engine that reports them (vllm), or set algo.tis_cap=null")
    return ro.engine_logprobs


# -- the algorithms -----------------------------------------------------------------------------
class GroupRelative(OnlineAlgorithm):
    """Shared loop; subclasses define :meth:`advantages` and :attr:`loss_kl_coef`."""

    needs_reference = True
    loss_kl_coef = 0.0

    def advantages(self, scores: torch.Tensor, seq_kl: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _chunked(self, model, ro) -> torch.Tensor:
        return torch.cat([self.run.forward(self.logprobs, model, ro, idx)[0]
                          for idx in torch.arange(len(ro)).split(self.cfg.forward_batch_size)])

    def optimizer_steps_per_step(self) -> int:
        return self.cfg.epochs * self.cfg.num_minibatches

    # -- sampling -----------------------------------------------------------------------------
    def rollout(self, micro_batches: list[dict], num_samples: int | None = None, *, attempt: int = 0) -> Rollout:
        """:meth:`OnlineAlgorithm.rollout`, with DAPO's soft overlong penalty added to ``rollout.scores``
        when ``overlong_buffer > 0`` (``self.raw_scores`` keep the reward's own values)."""
        ro = super().rollout(micro_batches, num_samples, attempt=attempt)
        c = self.cfg
        if c.overlong_buffer > 0:
            shaping = overlong_shaping(ro.response_lengths, c.generation.max_new_tokens, c.overlong_buffer,
                                       c.overlong_penalty)  # [N]
            ro.scores = ro.scores + shaping.to(ro.scores.device, ro.scores.dtype)
        return ro

    def _total(self, n: float) -> float:
        """``n`` summed over processes."""
        return float(self.run.all_reduce_sum(torch.tensor(float(n), dtype=torch.float64, device=self.run.device)))

    def sample_groups(self, micro_batches: list[dict]) -> tuple[Rollout, torch.Tensor, dict[str, float]]:
        """The step's rollout, which rows enter the loss (``[N]`` bool) and sampling metrics.

        Without ``dynamic_sampling`` every row enters. With it (DAPO), the groups whose scores are all
        equal are sampled again (``attempt`` 1, 2, ... of the same prompts: fresh keyed samples), up to
        ``max_resample`` rounds, each new group replacing the old; groups still all equal are left out
        of the loss. ``rollout/resampled`` counts resampled groups (over rounds), ``rollout/groups_dropped``
        the groups left out, both over every process's groups. A round runs on every process while any
        process has such a group (a process with none samples one prompt and discards it), so collective
        generation stays in step and the result does not depend on the number of processes."""
        c, K = self.cfg, self.cfg.num_samples
        ro = self.rollout(micro_batches)
        if not c.dynamic_sampling:
            return ro, torch.ones(len(ro), dtype=torch.bool), {}
        raw = self.raw_scores
        flat = zero_spread_groups(ro.scores, K).cpu()  # [G]
        pad_id = self.run.tokenizer.pad_token_id
        pad_id = self.run.tokenizer.eos_token_id if pad_id is None else pad_id
        resampled = 0
        for attempt in range(1, c.max_resample + 1):
            todo = flat.nonzero().squeeze(1)  # [g]
            if self._total(len(todo)) == 0:
                break
            groups = todo if len(todo) else torch.zeros(1, dtype=torch.long)  # placeholder keeps processes in step
            new = self.rollout(prompt_subsets(micro_batches, groups), attempt=attempt)
            if len(todo):
                rows = group_rows(todo, K)  # [g * K]
                ro = replace_rows(ro, rows, new, pad_id)
                raw = raw.clone()
                raw[rows.to(raw.device)] = self.raw_scores.to(raw.dtype)
                flat[todo] = zero_spread_groups(new.scores, K).cpu()
                resampled += len(todo)
        self.raw_scores = raw
        keep = ~flat.repeat_interleave(K)  # [N]
        counts = self.run.all_reduce_sum(torch.tensor([float(resampled), float(flat.sum())], dtype=torch.float64,
                                                      device=self.run.device))  # over every process's groups
        return ro, keep, {"rollout/resampled": float(counts[0]), "rollout/groups_dropped": float(counts[1])}

    def loss_mask(self, ro: Rollout, keep: torch.Tensor) -> torch.Tensor:
        """``[N, T-1]``: the response tokens of the rows in ``keep``, without truncated responses
        when ``overlong_filter`` is on."""
        rows = keep.to(self.run.device)  # [N]
        if self.cfg.overlong_filter:
            rows = rows & ro.has_eos.to(self.run.device).bool()
        return ro.mask.to(self.run.device) & rows.unsqueeze(1)

    # -- loss -----------------------------------------------------------------------------------
    def policy_loss(self, logp, old, adv, mask, ref, ent):
        """The clipped surrogate of rows with ``[n, T-1]`` tensors: per-token (``ops.ppo_loss``) or
        GSPO-token ratios (:func:`gspo_loss`), reduced by ``agg`` (Dr. GRPO's constant normaliser is
        ``seq-mean-token-sum`` divided by ``generation.max_new_tokens``)."""
        c = self.cfg
        agg, scale = (("seq-mean-token-sum", 1.0 / c.generation.max_new_tokens) if c.agg == CONSTANT_AGG
                      else (c.agg, 1.0))
        kw = dict(ref_logprobs=ref if self.loss_kl_coef > 0 else None, kl_coef=self.loss_kl_coef, entropy=ent,
                  entropy_coef=c.entropy_coef, agg=agg)
        if c.importance == "sequence":
            loss, st = gspo_loss(logp, old, adv, mask, clip_eps=c.seq_clip_eps, clip_eps_high=c.seq_clip_eps_high,
                                 **kw)
        else:
            loss, st = ops.ppo_loss(logp, old, adv, mask, clip_eps=c.clip_eps, clip_eps_high=c.clip_eps_high,
                                    kl_estimator="k3", **kw)
        return loss * scale, st

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        c = self.cfg
        ro, keep, sampling = self.sample_groups(micro_batches)
        mask = ro.mask.to(self.run.device)  # [N, T-1] response tokens
        loss_mask = self.loss_mask(ro, keep)  # [N, T-1] tokens that enter the loss
        # no token anywhere: no optimiser step at all (a zero-gradient AdamW step would still move the weights)
        update = self._total(float(loss_mask.sum())) > 0
        single_pass = c.epochs == 1 and c.num_minibatches == 1 and update
        with self.timer("train"):
            ref = self._chunked(self.run.reference, ro)  # [N, T-1]
            if single_pass:  # the training forward doubles as the "old" forward: ratio = 1
                logp_all, _, ent_all = self.run.forward(self.logprobs, self.run.policy, ro, entropy=True)
                old = logp_all.detach()
            else:
                old = self._chunked(self.run.policy, ro)
            seq_kl = sequence_kl(kl_per_token(old, ref, mask, "k1"), mask)  # [N]
            adv_seq = self.advantages(ro.scores, seq_kl)  # [N]
            adv = adv_seq.unsqueeze(1).expand_as(old).contiguous()  # [N, T-1]
            gap = {}
            if ro.engine_logprobs is not None:
                gap = engine_gap_metrics(old, ro.engine_logprobs.to(old.device), mask, c.tis_cap)
            if c.tis_cap is not None:
                engine = engine_logprobs(ro, self.run, c.tis_cap).to(old.device)
                adv = adv * truncated_is_weights(old, engine, mask, c.tis_cap)  # [N, T-1]
            means = MetricMeans()
            for _ in range(c.epochs if update else 0):
                for idx in minibatches(len(ro), c.num_minibatches, self.generator):
                    if single_pass:
                        logp, ent = logp_all[idx], ent_all[idx]
                    else:
                        logp, _, ent = self.run.forward(self.logprobs, self.run.policy, ro, idx, entropy=True)
                    loss, st = self.policy_loss(logp, old[idx], adv[idx], loss_mask[idx], ref[idx], ent)
                    self.run.backward(loss)
                    step = self.run.optimizer_step()
                    means.add({"loss": loss, "pg/clipfrac": st["clipfrac"], "pg/approx_kl": st["approx_kl"],
                               "pg/entropy": st["entropy"], "pg/kl_k3": st["kl"], **step})
        metrics = {**self.rollout_metrics(ro), "rollout/kl": float(seq_kl.mean()),
                   "pg/advantage_abs": float(adv_seq.abs().mean()), **sampling, **gap,
                   **({} if update else {"pg/skipped_update": 1.0}), **means.result(), **self.pop_times()}
        self.write_samples(ro)
        return metrics


class GRPO(GroupRelative):
    def setup(self) -> None:
        super().setup()
        self.loss_kl_coef = float(self.cfg.beta)

    def advantages(self, scores, seq_kl):
        return group_advantages(scores, self.cfg.num_samples, "grpo", scale_by_std=self.cfg.scale_rewards)


class RLOO(GroupRelative):
    def setup(self) -> None:
        super().setup()
        self.score_norm = ScoreNormalizer()

    def advantages(self, scores, seq_kl):  # [N], [N] -> [N]
        if self.cfg.normalize_scores:
            scores = self.score_norm(scores, self.run.all_reduce_sum)
        return group_advantages(scores - self.cfg.kl_coef * seq_kl, self.cfg.num_samples, "rloo")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "score_norm": self.score_norm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "score_norm" in state:
            self.score_norm.load_state_dict(state["score_norm"])


def validate_config(cfg: GroupConfig) -> None:
    """Cross-field checks, run when the config is composed."""
    if cfg.overlong_buffer > cfg.generation.max_new_tokens:
        raise UserError(f"algo.overlong_buffer={cfg.overlong_buffer} is longer than "
                        f"algo.generation.max_new_tokens={cfg.generation.max_new_tokens}",
                        "set algo.overlong_buffer to at most algo.generation.max_new_tokens (0 turns the penalty off)")


@hookimpl
def alignkit_register_algorithms():
    return [
        AlgorithmSpec("grpo", GRPOConfig, GRPO, "group-relative policy optimisation: group-normalised advantages, "
                      "no value model", paper="Shao et al. 2024, arXiv:2402.03300", validate=validate_config),
        AlgorithmSpec("rloo", RLOOConfig, RLOO, "REINFORCE leave-one-out: KL-penalised sequence rewards with a "
                      "leave-one-out baseline", paper="Ahmadian et al. 2024, arXiv:2402.14740",
                      validate=validate_config),
    ]
