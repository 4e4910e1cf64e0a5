"""The frozen reference model of DPO, PPO and friends, live or precomputed.

Live, it is a frozen copy of the starting policy (or, under LoRA, the policy's base weights with the
adapters disabled). Precomputed (``trainer.precompute_reference=true``, preference algorithms only),
the reference's sequence log-probs of every training and held-out pair are computed once, from the
starting policy, before step 1 (:func:`precompute_pair_logprobs`); no reference model exists while
training, and :meth:`ReferenceModel.pair_logprobs` reads the table by the batch's ``split`` and
``index``. The table is cached on disk under a key of the starting weights and the tokenised pairs
(``$ALIGNKIT_CACHE/reference``), and kept in the run folder for resuming.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from alignkit import modeling
from alignkit.errors import UserError

log = logging.getLogger("alignkit")

#: the run-folder copy of a precomputed reference table (read back on resume)
REFERENCE_FILE = "reference_logprobs.safetensors"
_FIELDS = ("sum", "mean", "ntokens")


class ReferenceModel:
    """A frozen copy of the starting policy, or — under LoRA — the policy's own
    base weights with the adapters disabled (no second copy in memory)."""

    def __init__(self, policy, table: dict[str, torch.Tensor] | None = None):
        self.table = table  #: precomputed ``{"<split>/<field>": [N]}``; None: a live model
        self.shares_policy = hasattr(policy, "disable_adapter") and table is None
        if table is not None:
            self.model = None
        elif self.shares_policy:
            self.model = policy
        else:
            self.model = copy.deepcopy(modeling.unwrap(policy)).eval().requires_grad_(False)

    @property
    def precomputed(self) -> bool:
        return self.table is not None

    def active(self):
        """Context in which :attr:`model` computes the reference (adapters disabled under LoRA)."""
        return self._ctx()

    def pair_logprobs(self, batch: dict) -> dict[str, tuple]:
        """Precomputed ``{"sum": (chosen [B], rejected [B]), "mean": ..., "ntokens": ...}`` of a batch
        the trainer made (it carries ``split`` and ``index``)."""
        split, index = batch.get("split"), batch.get("index")
        if index is None or f"{split}/sum" not in self.table:
            raise UserError("precomputed reference log-probs are looked up by the trainer's batch index, and this "
                            "batch has none", "use trainer.precompute_reference=false for this algorithm")
        idx = index.cpu()
        dev = batch["chosen_input_ids"].device
        out = {}
        for f in _FIELDS:
            col = self.table[f"{split}/{f}"]  # [2N]: chosen rows, then rejected rows
            n = col.shape[0] // 2
            out[f] = (col[idx].to(dev), col[n + idx].to(dev))
        return out

    def _ctx(self):
        return self.model.disable_adapter() if self.shares_policy else contextlib.nullcontext()

    def to(self, device):
        if self.model is not None and not self.shares_policy:
            self.model.to(device)
        return self

    def _live(self):
        if self.model is None:
            raise UserError("the reference's log-probs were precomputed for preference pairs only, and this "
                            "algorithm asks for token or sequence log-probs", "set trainer.precompute_reference=false")

    @torch.no_grad()
    def token_logprobs(self, input_ids, attention_mask, labels, **kw):
        self._live()
        with self._ctx():
            return modeling.token_logprobs(self.model, input_ids, attention_mask, labels, **kw)

    @torch.no_grad()
    def sequence_logprobs(self, input_ids, attention_mask, labels, **kw):
        self._live()
        with self._ctx():
            return modeling.sequence_logprobs(self.model, input_ids, attention_mask, labels, **kw)


# -- precomputed tables -------------------------------------------------------------------------
def reference_cache_dir() -> Path:
    """``$ALIGNKIT_CACHE/reference`` (default ``~/.cache/alignkit/reference``)."""
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit")) / "reference"


def _fingerprint(model, splits: dict, extra: dict) -> str:
    """Key of a table: every starting weight, every token of every pair, and how log-probs are taken."""
    h = hashlib.blake2b(digest_size=20)
    for name, t in sorted(modeling.unwrap(model).state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for split, feats in sorted(splits.items()):
        h.update(f"{split}:{len(feats)}".encode())
        for f in feats:
            for col in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"):
                h.update(np.asarray(f[col], dtype=np.int64).tobytes() + b"|")
    h.update(repr(sorted(extra.items())).encode())
    return h.hexdigest()


def precompute_pair_logprobs(run, splits: dict, collate, batch_size: int, extra: dict) -> dict[str, torch.Tensor]:
    """The reference table of ``splits`` (``{"train": features, "eval": features}``), computed with the
    run's policy *before any step* (it is the reference then), or read from the disk cache.

    Each process computes a contiguous share of every split; the shares are gathered, so every
    process holds the whole table. Returns ``{"<split>/<field>": [2N]}`` (chosen rows, then rejected)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    acc = run.accelerator
    key = _fingerprint(run.policy, splits, extra)
    path = reference_cache_dir() / f"{key}.safetensors"
    if path.is_file():
        log.info("reference log-probs of %s from the cache (%s)", "/".join(splits), path)
        return load_file(str(path))
    policy = run.policy
    was_training = policy.training
    policy.eval()
    table: dict[str, torch.Tensor] = {}
    world, rank = acc.num_processes, acc.process_index
    for split, feats in splits.items():
        n = len(feats)
        per = -(-n // world)
        lo, hi = min(n, rank * per), min(n, (rank + 1) * per)
        parts: dict[str, list] = {f: [] for f in _FIELDS}
        starts = range(lo, hi, batch_size)
        for i in tqdm(starts, desc=f"reference log-probs ({split})", leave=False,
                      disable=not (run.cfg.trainer.progress and acc.is_main_process)):
            batch = collate([feats[j] for j in range(i, min(i + batch_size, hi))])
            batch = {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.no_grad():
                out = run.pair_logprobs(policy, batch)
            for f in _FIELDS:
                parts[f].append(torch.stack([t.detach().float().cpu() for t in out[f]]))  # [2, b]
        for f in _FIELDS:
            mine = torch.cat(parts[f], dim=1) if parts[f] else torch.zeros(2, 0)  # [2, hi - lo]
            if world > 1:
                from accelerate.utils import gather_object

                mine = torch.cat(gather_object([mine]), dim=1)  # [2, n]
            table[f"{split}/{f}"] = mine.reshape(-1).contiguous()  # [2n]
    policy.train(was_training)
    if acc.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file(table, str(tmp))
        tmp.replace(path)
    return table
