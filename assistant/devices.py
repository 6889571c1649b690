"""Which device a `device` setting names, for every runtime: torch's, and CTranslate2's for
faster-whisper (which counts its CUDA devices itself)."""

from __future__ import annotations

import torch

from .errors import AssistantError, ModelUnavailableError


def pick_device(
    setting: str,
    *,
    cuda_devices: int | None = None,
    runtime: str = "PyTorch",
    error: type[AssistantError] = ModelUnavailableError,
) -> torch.device:
    """The device `setting` names: auto (the first CUDA device when there is one, else the CPU), cpu,
    cuda, cuda:N or mps. `cuda_devices`: how many CUDA devices `runtime` sees (default: torch's count).
    A CUDA device it does not see is an `error` that says so."""
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if setting == "auto":
        return torch.device("cuda" if count > 0 else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise error(f"unknown device {setting!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (device.index or 0) >= count:
        raise error(f"{setting} was asked for, but {runtime} sees {count} CUDA device(s); use cpu instead")
    return device
