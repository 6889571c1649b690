"""The machine a benchmark ran on, and its memory bandwidth measured in the same run."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics

import torch

from assistant.threads import model_threads

from .common import load_average, processor_name, repeat

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Bandwidth:
    """Bytes/s read from memory, over several reads of one buffer in the same run. Single reads here
    swung from 16 to 34 GB/s within seconds (other tenants, the processor's clock); the best of a run's
    reads was steadier (31.6, 33.1 and 33.7 GB/s in three processes), so percentages are judged
    against it, with the spread shown beside it."""

    reads: tuple[float, ...]

    @property
    def best(self) -> float:
        return max(self.reads)

    def spread(self) -> str:
        """The reads in GB/s, lowest, median and best."""
        low, middle, high = (value / 1e9 for value in (min(self.reads), statistics.median(self.reads), self.best))
        return f"{low:.1f} / {middle:.1f} / {high:.1f} over {len(self.reads)} reads"


def read_bandwidth(device: torch.device, size_bytes: int = GIB, runs: int = 9) -> Bandwidth:
    """What the processor reads from memory: sums over a buffer far larger than any cache (CPU), or
    copies between two buffers on the GPU (read + write counted)."""
    if device.type == "cuda":
        a = torch.empty(size_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
        b = torch.empty_like(a)
        torch.cuda.synchronize()  # the fill is not part of the first copy

        def copy() -> None:
            b.copy_(a)
            torch.cuda.synchronize()

        return Bandwidth(tuple(2 * size_bytes / seconds for seconds in repeat(copy, runs)))
    a = torch.ones(size_bytes // 4, dtype=torch.float32)
    return Bandwidth(tuple(size_bytes / seconds for seconds in repeat(a.sum, runs, warm_up=1)))


def memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError):
        return 0.0


def details(device: torch.device, bandwidth: Bandwidth) -> dict:
    import transformers

    info = {
        "processor": processor_name(),
        "cores": os.cpu_count(),
        "model threads": model_threads(),
        "memory GiB": round(memory_gib(), 1),
        "device": device.type,
        "measured read bandwidth GB/s": round(bandwidth.best / 1e9, 1),
        "read bandwidth GB/s, lowest / median / best": bandwidth.spread(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load average": load_average(separator=" "),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
