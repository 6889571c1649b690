"""Memory that PyTorch has freed, given back to the system.

Loading a model frees a great deal on the way (weights converted to bfloat16, then to int8; the
float32 copies a checkpoint is read into), and a compile frees its working set at the end. glibc's
malloc keeps much of that in its heap for reuse rather than returning it (its threshold for giving
large blocks their own mapping rises as such blocks are freed), so the process stays that much bigger
while idle (tests/unit/test_memory.py makes such a heap and gives it back). Called at those points
only: trimming is a walk over the heap, not for every reply.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from pathlib import Path

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
    """Copy the weights that still point into a checkpoint's file into memory of their own; returns
    the bytes copied. transformers maps a safetensors file and leaves a weight that needs no
    conversion in place, in the mapping: once the fast loop has converted most weights (int8, and the
    mapping's pages read while loading still count as the process's memory, all of them: 420 MB for
    SmolVLM2-256M), the few left (embeddings, norms: 70 MB there) hold that whole mapping. Copied,
    its pages are given back (and it closes with its last tensor). Where nothing was converted, the
    mapping is the weights themselves: not called there."""
    in_checkpoint = _in_checkpoint_mapping()
    copied = 0
    with torch.no_grad():
        for module in model.modules():
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if type(tensor.data) is not torch.Tensor or tensor.device.type != "cpu":
                    continue  # a quantized weight (made in memory) or on an accelerator
                if not in_checkpoint(tensor):
                    continue  # memory of its own, or a package's (lent: packaged_step)
                copied += tensor.untyped_storage().nbytes()
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.data = tensor.data.clone()  # the same parameter: tied weights stay tied
                else:
                    setattr(module, name, tensor.clone())
    if copied:
        # Rather than a full garbage collection (a quarter of a second at a start) to close a mapping
        # that a reference cycle may hold: its pages are what counts.
        page_out_checkpoints()
    return copied


def _in_checkpoint_mapping() -> Callable[[torch.Tensor], bool]:
    """Whether a tensor's memory is in a safetensors file's mapping (where /proc/self/maps cannot be
    read: whether its storage cannot be resized, as a mapping's cannot)."""
    try:
        with open("/proc/self/maps") as maps:
            ranges = [mapping[:2] for mapping in map(_mapping, maps) if mapping and _is_checkpoint(mapping[3])]
    except OSError:
        return lambda tensor: not tensor.untyped_storage().resizable()
    return lambda tensor: any(start <= tensor.untyped_storage().data_ptr() < end for start, end in ranges)


# Drop this process's pages of a range; for a file mapping never written to, the page cache keeps
# them, so a page read again, or the same file read by the next start, comes from memory.
MADV_DONTNEED = 4
# Reclaim a range's pages: the file pages leave the page cache too (Linux 5.4 on); pages written to
# stay (there is no swap to put them in, and one would keep them). For mappings holding such pages:
# used for all before, and each warm start read the packages' libraries (~400 MB), the GPU libraries
# and the checkpoint from the disk again.
MADV_PAGEOUT = 21


def page_out_files(matches: Callable[[str], bool], written_by_none: bool = False) -> int:
    """Drop this process's pages of the files it maps whose path `matches`; the bytes of such
    mappings, 0 where the system cannot (not Linux: costs memory only). A page read again later
    comes back from the page cache (or the file). For file data read once and no longer needed in
    this process's memory: a checkpoint's weights once converted or hashed, the GPU libraries on a
    CPU; otherwise those pages stay counted as the process's until the mapping closes. A
    mapping that holds pages written to (a library's relocated data), or may be written to while
    this runs (a writable one, unless `written_by_none` says that no code writes to these files'
    mappings), keeps those: only the pages read from the file go, from the page cache too."""
    madvise = _madvise()
    if madvise is None:
        return 0
    asked = 0
    for start, end, unwritten in _file_mappings(matches, written_by_none):
        if madvise(start, end - start, MADV_DONTNEED if unwritten else MADV_PAGEOUT) == 0:
            asked += end - start
    return asked


def _file_mappings(matches: Callable[[str], bool], written_by_none: bool) -> list[tuple[int, int, bool]]:
    """(start, end, whether no page of it is or can become one of its own) for each mapping of a file
    whose path `matches`: found in /proc/self/maps, then each one's anonymous pages in /proc/self/smaps.
    (A loaded model's smaps is 50,000 lines and costs the kernel tens of milliseconds to write: read
    only where some mapping matches, and searched rather than parsed line by line.)"""
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        chosen = [mapping for line in maps if (mapping := _mapping(line)) is not None and matches(mapping[3])]
        if chosen:
            smaps = "\n" + Path("/proc/self/smaps").read_text()  # each mapping's header after a newline
            return [
                (start, end, (written_by_none or "w" not in permissions) and _anonymous_kib(smaps, start) == 0)
                for start, end, permissions, _ in chosen
            ]
    return []


def _anonymous_kib(smaps: str, start: int) -> int:
    """The `Anonymous:` field (pages copied on a write) of the mapping at `start` in `smaps`'s text;
    -1 where it is missing (the mapping has gone: counted as written to, so left as it is)."""
    header = smaps.find(f"\n{start:08x}-")  # as the kernel writes it
    field = smaps.find("\nAnonymous:", header) if header >= 0 else -1
    if field < 0:
        return -1
    return int(smaps[field : field + 64].split()[1])


def _mapping(line: str) -> tuple[int, int, str, str] | None:
    """(start, end, permissions, path) of a mapping of a file, from its line in /proc/self/maps (its
    first line in /proc/self/smaps); None for any other line."""
    fields = line.split(maxsplit=5)
    if len(fields) < 6 or fields[0].endswith(":") or "-" not in fields[0]:
        return None
    start, end = (int(address, 16) for address in fields[0].split("-"))
    return start, end, fields[1], fields[5].rstrip("\n")


def _is_checkpoint(path: str) -> bool:
    return path.endswith(".safetensors")


def page_out_checkpoints() -> int:
    """Drop the pages read from safetensors checkpoints: for weights converted to memory of their own
    (int8), whose pages read from the file would otherwise count until the mapping closes."""
    return page_out_files(_is_checkpoint, written_by_none=True)  # nothing writes to weights in a checkpoint


# Where the GPU stack's libraries live: PyPI's Linux torch is a CUDA build, which loads them (CUDA's
# from nvidia-* wheels, Triton's) at import, 200 MB of pages read and kept that a CPU run never calls.
GPU_LIBRARIES = ("/site-packages/nvidia/", "/libtorch_cuda", "/libc10_cuda", "/libtriton", "/triton/_C/")


def page_out_gpu_libraries() -> int:
    """Drop the pages of the GPU libraries loaded so far (for a process that runs on the CPU only)."""
    return page_out_files(lambda path: any(part in path for part in GPU_LIBRARIES))


@functools.cache
def _madvise():
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise
