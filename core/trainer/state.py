"""All training state in one place, and its checkpoint format.

A checkpoint folder ``checkpoints/step-N/`` holds:

* ``model/``: the policy in Hugging Face format (``from_pretrained`` loads it; LoRA merged);
* ``weights.safetensors``: every trained module's exact weights (``policy.*``, ``extra0.*``, ...,
  LoRA adapters included), which a resume loads;
* ``trainer_state.pt``: step, optimiser, LR schedule, data position, algorithm state, last
  metrics and the RNG states of every process, as plain tensors and containers only, so it is
  read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.

It is written as ``step-N.partial/`` and renamed when complete, so a folder without the
suffix is always whole.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "weights.safetensors"


class BatchStream:
    """Endless, seeded stream of collated batches over a list of features, sharded over processes.

    Each epoch is a fresh permutation drawn from ``seed + epoch``, cut into *global* batches of
    ``batch_size`` examples (a tail shorter than a batch is skipped, so every batch is whole);
    process ``rank`` of ``world`` takes the ``rank``-th contiguous ``batch_size / world`` of each.
    So the examples of an optimiser step do not depend on the number of processes. Batches carry
    ``index`` ``[b]`` (int64): each example's position in ``features``. The position (``epoch``,
    ``offset``) is the data state a checkpoint records.
    """

    def __init__(self, features, batch_size: int, collate, seed: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1):
        if len(features) < batch_size:
            from alignkit.errors import UserError

            raise UserError(f"{len(features)} training examples are fewer than one batch "
                            f"(trainer.batch_size={batch_size})",
                            "lower trainer.batch_size or add data (check data.max_length / truncation)")
        self.features, self.batch_size, self.collate = features, batch_size, collate
        self.seed, self.shuffle, self.rank, self.world = seed, shuffle, rank, world
        self.epoch, self.offset = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        idx = list(range(len(self.features)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(idx)
        return idx

    def next(self) -> dict:
        if self.offset + self.batch_size > len(self._order):
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._permutation()
        chunk = self._order[self.offset: self.offset + self.batch_size]
        self.offset += self.batch_size
        per = self.batch_size // self.world
        mine = chunk[self.rank * per: (self.rank + 1) * per]
        batch = self.collate([self.features[i] for i in mine])
        batch["index"] = torch.tensor(mine, dtype=torch.long)  # [b]
        batch["split"] = "train"
        return batch

    @property
    def progress(self) -> float:
        """Epochs done, as a fraction."""
        return self.epoch + self.offset / len(self.features)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._permutation()


def rng_state() -> dict:
    """This process's RNG states as tensors and plain values (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                    int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state_file(path: Path) -> dict:
    """``trainer_state.pt`` of a checkpoint, read without unpickling code."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints (``checkpoints/step-N`` with its state file), oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


@dataclass
class TrainState:
    """Model, optimiser, schedule, RNG, data position and algorithm state."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    data: BatchStream
    algorithm: object
    step: int = 0
    metrics: dict = field(default_factory=dict)  #: last logged values

    def state_dict(self, rng: list[dict], optimizer: dict | None = None) -> dict:
        """Everything but the weights (saved separately); ``rng``: every process's RNG state;
        ``optimizer``: the optimiser state when gathered elsewhere (FSDP)."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict() if optimizer is None else optimizer,
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "rng": rng,
            "metrics": dict(self.metrics),
        }

    def load_state_dict(self, state: dict, rank: int) -> None:
        self.step = int(state["step"])
        if "optimizer" in state:  # (FSDP loads its sharded optimiser state itself)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state_dict(state["data"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.metrics = dict(state["metrics"])
        rngs = state["rng"]
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
