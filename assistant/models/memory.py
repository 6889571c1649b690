"""Memory that PyTorch has freed, given back to the system.

Loading a model frees a great deal on the way (weights converted to bfloat16, then to int8; the
float32 copies a checkpoint is read into), and a compile frees its working set at the end. glibc's
malloc keeps much of that in its heap for reuse rather than returning it (its threshold for giving
large blocks their own mapping rises as such blocks are freed), so the process stays that much bigger
while idle (tests/unit/test_memory.py makes such a heap and gives it back). Called at those points
only: trimming is a walk over the heap, not for every reply.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))  # None found: the process's own symbols
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl, macOS)


def give_back_freed_memory() -> bool:
    """Return the heap's free memory to the system (glibc's malloc_trim); False where the C library
    has no such call, which costs memory only."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
