"""Host-memory behaviour of a training process.

glibc's ``malloc`` serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap`` and
gives it back to the operating system on ``free``; smaller ones come from the heap, whose free holes stay
resident. The threshold starts at 128 KiB but is adaptive: every ``free`` of an mmapped block larger than it
raises it to that block's size (up to 32 MiB). After the first large tensor of a run is freed, activations
and gradients of a few MiB each are served from the heap, and every step's new ones land in fresh heap space
while the holes of the last step's stay resident: the process's resident memory grows by about a gradient's
and an activation set's worth over the first steps. Fixing the threshold (``mallopt`` turns the adaptation
off) keeps those tensors mmapped, so freed memory leaves the process at once.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["set_malloc_mmap_threshold"]

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
