"""Ranked lists built online: sample ``k`` responses per prompt with a model, score them.

As in the RRHF and PRO papers, the ranked lists for a prompt set are built once, before
training: the starting policy samples ``k`` responses per prompt, a reward function or
reward model scores them (optionally together with the dataset's own responses, e.g.
a preference pair's chosen and rejected), and the result is a list of ``ranked``
examples ``{"prompt", "responses", "scores"}``.

The lists are cached as JSON lines in ``<cache_dir>/ranked-<key>.jsonl`` where ``key``
hashes everything that determines them: the prompts (and dataset responses), a
fingerprint of the model's weights, the sampling config, ``k``, the seed and the
reward's name. A repeated run with the same inputs reads the file instead of sampling;
change any input and a new file is written. A ``.meta.json`` beside it records the
inputs in readable form.

Sampling and scoring reuse :mod:`alignkit.rollout` (``generate_from_prompts`` and
``RewardScorer``), so prompts are rendered exactly as the data pipeline renders them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from alignkit.rollout.config import RewardConfig, SamplingConfig
from alignkit.config.schema import check

__all__ = ["OnlineRankingConfig", "default_cache_dir", "model_fingerprint", "ranked_cache_key", "sample_ranked_lists",
           "build_ranked_online", "read_jsonl", "write_jsonl"]


@dataclass
class OnlineRankingConfig:
    """Config fields of ranked-list algorithms that can build their lists online (PRO, RRHF)."""

    def __post_init__(self) -> None:
        check(self, num_samples=">= 0", sampling_batch_size=">= 1")

    num_samples: int = 0  #: responses sampled per prompt before training (0: train on the data's lists)
    include_dataset_responses: bool = True  #: keep the data's own responses in each list (rescored by the reward)
    generation: SamplingConfig = field(default_factory=SamplingConfig)  #: how responses are sampled
    reward: RewardConfig = field(default_factory=RewardConfig)  #: what scores them
    sampling_batch_size: int = 8  #: prompts per generate call
    cache_dir: Optional[str] = None  #: where built lists are cached (default $ALIGNKIT_CACHE/ranked)


def default_cache_dir() -> Path:
    """``$ALIGNKIT_CACHE/ranked`` (default ``~/.cache/alignkit/ranked``)."""
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit")) / "ranked"


@torch.no_grad()
def model_fingerprint(model: Any) -> str:
    """A short hash of a model's class, config and weights (sum and absolute sum of every tensor,
    so two runs of the same checkpoint, or the same seed of a random-init preset, agree)."""
    h = hashlib.sha256(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_json_string"):
        h.update(cfg.to_json_string(use_diff=False).encode())
    for name, p in model.state_dict().items():
        if not torch.is_floating_point(p):
            continue
        q = p.detach().double()
        h.update(f"{name}:{tuple(q.shape)}:{q.sum().item():.8e}:{q.abs().sum().item():.8e}".encode())
    return h.hexdigest()[:16]


def ranked_cache_key(prompts: Sequence, extra_responses: Sequence | None, model_fp: str, sampling: dict,
                     k: int, seed: int, reward_name: str) -> str:
    """Hex digest identifying a set of ranked lists (see module docstring)."""
    blob = json.dumps({"prompts": list(prompts), "extra": list(extra_responses) if extra_responses else None,
                       "model": model_fp, "sampling": dict(sampling), "k": int(k), "seed": int(seed),
                       "reward": reward_name}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    """Write atomically (a partial file never looks like a finished cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def sample_ranked_lists(prompts: Sequence, model: Any, tokenizer: Any, data_cfg: Any,
                        scorer: Callable[..., torch.Tensor], *, k: int, sampling: dict,
                        extra_responses: Sequence[Sequence[str]] | None = None,
                        references: Sequence | None = None, batch_size: int = 8,
                        missing_eos_penalty: float = 0.0) -> list[dict]:
    """Sample ``k`` responses per prompt and score them (no cache).

    ``sampling``: keyword arguments of :func:`alignkit.rollout.generation.generate`
    (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``). ``extra_responses[i]``
    (optional) are existing responses of prompt ``i`` put first in its list and scored by the
    same ``scorer(prompts, completions, references=...)`` so all scores share one scale.
    ``missing_eos_penalty`` is subtracted from the score of a sampled response that hit
    ``max_new_tokens`` without EOS.
    """
    from alignkit.rollout.generation import generate_from_prompts

    out: list[dict] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        responses: list[list[str]] = [list(extra_responses[start + i]) if extra_responses else []
                                      for i in range(len(chunk))]
        penalty: list[list[float]] = [[0.0] * len(rs) for rs in responses]
        if k > 0:
            roll = generate_from_prompts(model, tokenizer, chunk, data_cfg, num_samples=k, **sampling)
            for i in range(len(chunk)):
                responses[i] += roll.completions[i * k:(i + 1) * k]
                penalty[i] += [0.0 if bool(e) else float(missing_eos_penalty) for e in roll.has_eos[i * k:(i + 1) * k]]
        flat_p = [p for p, rs in zip(chunk, responses) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        flat_ref = None
        if references is not None:
            flat_ref = [ref for ref, rs in zip(references[start:start + batch_size], responses) for _ in rs]
        scores = scorer(flat_p, flat_r, references=flat_ref).tolist()
        pos = 0
        for p, rs, pen in zip(chunk, responses, penalty):
            out.append({"prompt": p, "responses": rs,
                        "scores": [float(s) - d for s, d in zip(scores[pos:pos + len(rs)], pen)]})
            pos += len(rs)
    return out


def build_ranked_online(prompts: Sequence, model: Any, tokenizer: Any, data_cfg: Any,
                        scorer: Callable[..., torch.Tensor], *, k: int, sampling: dict, seed: int = 0,
                        reward_name: str = "", extra_responses: Sequence[Sequence[str]] | None = None,
                        references: Sequence | None = None, cache_dir: str | Path | None = None,
                        batch_size: int = 8, missing_eos_penalty: float = 0.0) -> tuple[list[dict], Path, bool]:
    """Ranked lists for ``prompts``, read from the cache or sampled (seeded) and cached.

    Returns ``(examples, cache_file, from_cache)``.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    fp = model_fingerprint(model)
    sampling = {**dict(sampling), "missing_eos_penalty": float(missing_eos_penalty)}
    key = ranked_cache_key(prompts, extra_responses, fp, sampling, k, seed, reward_name)
    path = cache_dir / f"ranked-{key}.jsonl"
    if path.exists():
        rows = read_jsonl(path)
        if len(rows) == len(prompts):
            return rows, path, True
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        gen = {k_: v for k_, v in sampling.items() if k_ != "missing_eos_penalty"}
        rows = sample_ranked_lists(prompts, model, tokenizer, data_cfg, scorer, k=k, sampling=gen,
                                   extra_responses=extra_responses, references=references, batch_size=batch_size,
                                   missing_eos_penalty=missing_eos_penalty)
    write_jsonl(path, rows)
    meta = {"key": key, "n_prompts": len(prompts), "model_fingerprint": fp, "sampling": dict(sampling), "k": k,
            "seed": seed, "reward": reward_name, "with_dataset_responses": extra_responses is not None}
    path.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return rows, path, False
