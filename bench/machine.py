"""The machine a benchmark ran on, and its memory bandwidth measured in the same run."""

from __future__ import annotations

import os
import platform
import time

import torch

from assistant.threads import model_threads

GIB = 1024**3


def read_bandwidth(device: torch.device, size_bytes: int = GIB, runs: int = 5) -> float:
    """Bytes/s the processor reads from memory: the best of `runs` sums over a buffer far larger
    than any cache (CPU), or copies between two buffers on the GPU (read + write counted)."""
    if device.type == "cuda":
        a = torch.empty(size_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
        b = torch.empty_like(a)
        best = 0.0
        for _ in range(runs):
            torch.cuda.synchronize()
            started = time.perf_counter()
            b.copy_(a)
            torch.cuda.synchronize()
            best = max(best, 2 * size_bytes / (time.perf_counter() - started))
        return best
    a = torch.ones(size_bytes // 4, dtype=torch.float32)
    best = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        a.sum()
        best = max(best, size_bytes / (time.perf_counter() - started))
    return best


def processor_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "load average": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
