"""The machine a benchmark ran on, and its memory bandwidth measured in the same run."""

from __future__ import annotations

import os
import platform

import torch

from assistant.threads import model_threads

from .common import load_average, processor_name, repeat

GIB = 1024**3


def read_bandwidth(device: torch.device, size_bytes: int = GIB, runs: int = 5) -> float:
    """Bytes/s the processor reads from memory: the best of `runs` sums over a buffer far larger
    than any cache (CPU), or copies between two buffers on the GPU (read + write counted)."""
    if device.type == "cuda":
        a = torch.empty(size_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
        b = torch.empty_like(a)
        torch.cuda.synchronize()  # the fill is not part of the first copy

        def copy() -> None:
            b.copy_(a)
            torch.cuda.synchronize()

        return 2 * size_bytes / min(repeat(copy, runs))
    a = torch.ones(size_bytes // 4, dtype=torch.float32)
    return size_bytes / min(repeat(a.sum, runs))


def memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError):
        return 0.0


def details(device: torch.device, bandwidth: float) -> dict:
    import transformers

    info = {
        "processor": processor_name(),
        "cores": os.cpu_count(),
        "model threads": model_threads(),
        "memory GiB": round(memory_gib(), 1),
        "device": device.type,
        "measured read bandwidth GB/s": round(bandwidth / 1e9, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load average": load_average(separator=" "),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
