"""All training state in one place, so exact resume and data parallelism can be
added without rewriting the loop."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch


class BatchStream:
    """Endless, seeded stream of collated batches over a list of features.

    Each epoch is a fresh permutation drawn from ``seed + epoch``; the position
    (``epoch``, ``offset``) is the data state a checkpoint records.
    """

    def __init__(self, features: list, batch_size: int, collate, seed: int, shuffle: bool = True):
        if not features:
            raise ValueError("no training examples left after tokenisation (check data.max_length / truncation)")
        self.features, self.batch_size, self.collate = features, batch_size, collate
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.offset = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        idx = list(range(len(self.features)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(idx)
        return idx

    def next(self) -> dict:
        if self.offset >= len(self._order):
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._permutation()
        chunk = self._order[self.offset: self.offset + self.batch_size]
        self.offset += len(chunk)
        return self.collate([self.features[i] for i in chunk])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = state["epoch"], state["offset"]
        self._order = self._permutation()


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


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

    def state_dict(self) -> dict:
        """Everything but the model weights (saved separately in HF format)."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "rng": rng_state(),
            "metrics": self.metrics,
        }
