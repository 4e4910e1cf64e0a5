"""Input checks shared by the ranked-list losses (PRO, RRHF)."""
from __future__ import annotations

import torch


def check_lists(valid: torch.Tensor | None, **tensors: torch.Tensor) -> torch.Tensor:
    """Raise unless every tensor is ``[B, K]`` with one shape; return ``valid`` as bool
    ``[B, K]`` (all True when ``None``)."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(tensors.values()))
    if first.dim() != 2 or len(set(shapes.values())) != 1:
        raise ValueError(", ".join(f"{n} {s}" for n, s in shapes.items()) + " must all be [B, K]")
    if valid is None:
        return torch.ones(first.shape, dtype=torch.bool, device=first.device)
    if tuple(valid.shape) != tuple(first.shape):
        raise ValueError(f"valid {tuple(valid.shape)} must be [B, K] = {tuple(first.shape)}")
    return valid.bool()
