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
import gc

import torch


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


def own_mapped_weights(model: torch.nn.Module) -> int:
    """Copy the weights that still point into the checkpoint's file into memory of their own; returns
    the bytes copied. transformers maps a safetensors file and leaves a weight that needs no
    conversion in place, in the mapping: once the fast loop has converted most weights (int8, and the
    mapping's pages read while loading still count as the process's memory, all of them: 420 MB for
    SmolVLM2-256M), the few left (embeddings, norms: 70 MB there) hold that whole mapping. Copied,
    it is closed. Where nothing was converted, the mapping is the weights themselves: not called there."""
    copied = 0
    with torch.no_grad():
        for module in model.modules():
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if type(tensor.data) is not torch.Tensor or tensor.device.type != "cpu":
                    continue  # a quantized weight (made in memory) or on an accelerator
                if tensor.untyped_storage().resizable():
                    continue  # memory of its own: a mapping's storage cannot be resized
                copied += tensor.untyped_storage().nbytes()
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.data = tensor.data.clone()  # the same parameter: tied weights stay tied
                else:
                    setattr(module, name, tensor.clone())
    gc.collect()  # the mapping closes with its last tensor
    return copied
