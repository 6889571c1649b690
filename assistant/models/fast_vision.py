"""A faster vision tower for a hub VLM on the CPU: where the decode step is compiled (serve), the
tower's linear layers take int8 weights and int8 activations (torchao's dynamic scheme, one scale per
row of activations and per channel of weights: the CPU's VNNI integer kernels), and its forward is
compiled with Inductor, frozen weights and all. Elsewhere it runs in bfloat16, eagerly (the loader's).

A view is the tower's costliest piece of a photo question; `python -m bench.vision` measures each
form against float32 and says how far its features move (bench/results/vision-tower.md).
"""

from __future__ import annotations

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


def quicken(tower: torch.nn.Module) -> None:
    """Give `tower` int8 linear layers and a compiled forward, compiled at its first call (the
    warm-up's); a compile that fails leaves the eager forward, which costs speed only."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(tower, Int8DynamicActivationInt8WeightConfig())
    eager = tower.forward
    compiled = torch.compile(eager)
    failed = threading.Event()  # a compile that failed: the eager forward from then on

    def forward(*args, **kwargs):
        if failed.is_set():
            return eager(*args, **kwargs)
        try:
            with torch._inductor.config.patch(VISION_INDUCTOR_SETTINGS):
                return compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - costs speed only: the eager forward answers
            log.warning("the compiled vision tower failed, continuing without it: %s", error)
            failed.set()
            return eager(*args, **kwargs)

    tower.forward = forward
