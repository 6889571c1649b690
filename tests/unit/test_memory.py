"""Freed memory goes back to the system (models/memory.py), where glibc keeps it otherwise."""

import ctypes.util
import sys

import pytest
import torch

from assistant.models.memory import give_back_freed_memory

MiB = 2**20


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["RssAnon"].split()[0]) / 1024


@pytest.mark.skipif(sys.platform != "linux" or ctypes.util.find_library("c") is None, reason="glibc's malloc")
def test_memory_freed_by_torch_and_kept_by_malloc_is_given_back():
    # Freeing one large block raises glibc's threshold for blocks of their own: the megabyte tensors
    # after it come from the heap, which keeps them once freed (as loading a model leaves it).
    torch.empty(64 * MiB, dtype=torch.uint8).fill_(1)  # freed at once
    tensors = [torch.empty(MiB, dtype=torch.uint8).fill_(1) for _ in range(300)]
    last = tensors.pop()  # the heap's top stays in use, so only a trim gives the rest back
    del tensors
    kept = resident_mib()
    assert give_back_freed_memory()
    assert resident_mib() < kept - 200, f"{kept:.0f} MiB resident before, {resident_mib():.0f} after"
    del last
