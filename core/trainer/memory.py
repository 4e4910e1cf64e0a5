"""Host-memory behaviour of a training process.

glibc's ``malloc`` serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap`` and
gives it back to the operating system on ``free``; smaller ones come from the heap, whose free holes stay
resident. The threshold starts at 128 KiB but is adaptive: every ``free`` of an mmapped block larger than it
raises it to that block's size (up to 32 MiB). After the first large tensor of a run is freed, activations
and gradients of a few MiB each are served from the heap, and every step's new ones land in fresh heap space
while the holes of the last step's stay resident: the process's resident memory grows by about a gradient's
and an activation set's worth over the first steps. Fixing the threshold (``mallopt`` turns the adaptation
off) keeps those tensors mmapped, so freed memory leaves the process at once.

AdamW's moments are created lazily, inside the first ``optimizer.step()``: at that moment the heap is full
of the first step's freed activations, the moments (two copies of the weights) settle into those holes, and
every later step's activations need fresh heap space above them. :func:`preallocate_adam_state` creates the
moments before the first forward instead, below the activations, so each step reuses the last one's space.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import torch

__all__ = ["set_malloc_mmap_threshold", "preallocate_adam_state"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def set_malloc_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` for this process (``trainer.malloc_mmap_threshold``).

    Returns whether it was applied: ``False`` where the C library is not glibc (musl, macOS, Windows) or
    ``nbytes`` is 0 (glibc's adaptive default is left alone)."""
    if nbytes <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, int(nbytes)) == 1


def preallocate_adam_state(optimizer: torch.optim.Optimizer) -> int:
    """Create the state ``torch.optim.Adam`` / ``AdamW`` would create in its first ``step()`` (``step``,
    ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` with amsgrad), now, for every parameter that has
    none. The updates are unchanged: the first step finds the state it would have made itself (zeros, step 0).
    Returns how many parameters got state; 0 for other optimisers."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return 0
    made = 0
    for group in optimizer.param_groups:
        on_device = group["capturable"] or group["fused"]
        for p in group["params"]:
            if not p.requires_grad or optimizer.state.get(p):  # .get: no empty entry for skipped ones
                continue
            state = optimizer.state[p]
            # as torch.optim.adam's _init_group: the step on the parameter's device when fused or
            # capturable, else on the CPU; fp32 unless non-fused with fp64 as the default dtype
            fp64 = not group["fused"] and torch.get_default_dtype() == torch.float64
            step_dtype = torch.float64 if fp64 else torch.float32
            state["step"] = torch.zeros((), dtype=step_dtype, device=p.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            made += 1
    return made
