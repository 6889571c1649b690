"""A faster vision tower for a hub VLM on the CPU: where the decode step is compiled (serve), the
tower's linear layers take int8 weights and int8 activations (torchao's dynamic scheme, one scale per
row of activations and per channel of weights: the CPU's VNNI integer kernels), and its forward is
compiled with Inductor, frozen weights and all. Elsewhere it runs in bfloat16, eagerly (the loader's).

A view is the tower's costliest piece of a photo question; `python -m bench.vision` measures each
form against float32 and says how far its features move (bench/results/vision-tower.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import torch

log = logging.getLogger(__name__)

# Frozen weights let Inductor pack them for its own kernels (as for the decode step).
VISION_INDUCTOR_SETTINGS = {"freezing": True}


def vision_tower(vlm) -> torch.nn.Module | None:
    """The VLM's vision encoder: `vision_tower` (LLaVA's families) or `vision_model` (Idefics3's)."""
    for name in ("vision_tower", "vision_model"):
        tower = getattr(vlm.model, name, None)
        if isinstance(tower, torch.nn.Module):
            return tower
    return None


def quicken_vision(vlm) -> bool:
    """Quicken the VLM's vision tower (`quicken`); False when no tower is found here."""
    tower = vision_tower(vlm)
    if tower is None:
        return False
    quicken(tower)
    return True


# Set in the thread that may compile a tower (the warm-up's, inside `compiling_here`).
_compiling_thread = threading.local()


@contextlib.contextmanager
def compiling_here():
    """Quickened towers called inside this block compile (the warm-up); called elsewhere before that,
    they run eagerly rather than compile in a reply's time."""
    _compiling_thread.active = True
    try:
        yield
    finally:
        _compiling_thread.active = False


def quicken(tower: torch.nn.Module) -> None:
    """Give `tower` int8 linear layers and a compiled forward, compiled at its first call inside
    `compiling_here` (the warm-up's); until then it runs eagerly, and a compile that fails leaves the
    eager forward for good, which costs speed only."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(tower, Int8DynamicActivationInt8WeightConfig())
    eager = tower.forward
    compiled = None  # made at the first compiled call, the warm-up's: importing Inductor is a second of the start
    ready = threading.Event()  # compiled once: the compiled forward for every caller from then on
    failed = threading.Event()

    def forward(*args, **kwargs):
        if failed.is_set() or not (ready.is_set() or getattr(_compiling_thread, "active", False)):
            return eager(*args, **kwargs)
        nonlocal compiled
        try:
            compiled = compiled or torch.compile(eager)
            with torch._inductor.config.patch(VISION_INDUCTOR_SETTINGS):
                output = compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - costs speed only: the eager forward answers
            log.warning("the compiled vision tower failed, continuing without it: %s", error)
            failed.set()
            return eager(*args, **kwargs)
        ready.set()
        return output

    tower.forward = forward
