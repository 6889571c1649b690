"""A faster vision tower for a hub VLM on the CPU: where the decode step is compiled (serve), the
tower's linear layers take int8 weights and int8 activations (torchao's dynamic scheme, one scale per
row of activations and per channel of weights: the CPU's VNNI integer kernels), and its forward is
compiled with Inductor, frozen weights and all. Elsewhere it runs in bfloat16, eagerly (the loader's).

Where the decode steps are packages (models/packaged_step.py), the tower is one too: exported as
the VLM calls it (any number of views), built once in a process of its own, loaded by later starts,
so that no start compiles it in the app's process (a minute of its cores, and its memory).

A view is the tower's costliest piece of a photo question; `python -m bench.vision` measures each
form against float32 and says how far its features move (bench/results/vision-tower.md).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import ModelOutput

from ..files import write_atomically
from .packaged_step import PackagedCall, StepPackages

log = logging.getLogger(__name__)

# Frozen weights let Inductor pack them for its own kernels (as for the decode step).
VISION_INDUCTOR_SETTINGS = {"freezing": True}
TOWER_PACKAGE = "vision-tower"  # one per tower: a VLM calls its tower one way, views of one size
TOWER_NAME = "tower."  # the tower's name in its exported program (_CallWithTensors): its weights' names begin with it
MAX_VIEWS = 64  # views of one call that the packaged tower takes (SmolVLM's `high` detail: 17 at most)
PACKAGED_CODE = (
    Path(__file__),
    Path(__file__).with_name("packaged_step.py"),
    Path(__file__).with_name("quantized_weights.py"),
)
# How the tower's linear layers are quantized: named in its packages' digest (StepPackages).
RECIPE = "int8 dynamic activations, int8 weights"


def vision_tower(vlm) -> torch.nn.Module | None:
    """The VLM's vision encoder: `vision_tower` (LLaVA's families) or `vision_model` (Idefics3's)."""
    inner = getattr(vlm, "model", None)  # none in the starter's composed model (its encoder is not a tower)
    for name in ("vision_tower", "vision_model"):
        tower = getattr(inner, name, None)
        if isinstance(tower, torch.nn.Module):
            return tower
    return None


def quicken_vision(vlm, packages: Path | None = None) -> bool:
    """Quicken the VLM's vision tower (`quicken`); False when no tower is found here."""
    tower = vision_tower(vlm)
    if tower is None:
        return False
    quicken(tower, packages)
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


def quicken(tower: torch.nn.Module, packages: Path | None = None) -> None:
    """Give `tower` int8 linear layers and a faster forward (_Quickened), whose package is kept in
    `packages` (none: compiled in the process). Where an earlier start built it, its int8 weights are
    taken from it rather than quantized again (quantized_weights)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    from .quantized_weights import quantize

    quickened = _Quickened(tower.forward)
    quickened.packages = _packages_of(tower, packages)  # named by the weights before quantization
    kept = _kept_weights(quickened.packages)
    quantize(tower, Int8DynamicActivationInt8WeightConfig(), kept)
    if kept:  # its other weights on the package's copy too (lend_to), before the checkpoint's is copied
        quickened.packages.lend_to(tower, TOWER_NAME)
    tower.forward = tower.quickened = quickened  # `quickened`: found under a ViewCache's wrap


def _packages_of(tower: torch.nn.Module, packages: Path | None) -> StepPackages | None:
    if packages is None:
        return None
    return StepPackages.open(packages, tower, VISION_INDUCTOR_SETTINGS, PACKAGED_CODE, RECIPE, "vision tower")


def _kept_weights(packages: StepPackages | None) -> dict:
    """The int8 weights that the tower's package (an earlier start's) keeps, where its call is kept
    beside it (`package_tower` takes it only then)."""
    if packages is None or TowerCall.load(packages.folder / f"{TOWER_PACKAGE}.json") is None:
        return {}
    return packages.kept_weights([TOWER_PACKAGE], TOWER_NAME, kind=PackagedCall)


class _Quickened:
    """A tower's forward: from its package once one is given (`packaged`, for the calls it fits),
    else compiled at its first call inside `compiling_here` (the warm-up's); until then eager, and a
    compile that fails leaves the eager forward for good, which costs speed only."""

    def __init__(self, eager: Callable):
        self.eager = eager
        self.packages: StepPackages | None = None  # where its package is kept (none: compiled in the process)
        self.packaged: PackagedTower | None = None
        self._compiled = None  # made at the first compiled call, the warm-up's: importing Inductor is a second
        self._ready = threading.Event()  # compiled once: the compiled forward for every caller from then on
        self._failed = threading.Event()

    def __call__(self, *args, **kwargs):
        if self.packaged is not None and not args and self.packaged.fits(kwargs):
            return self.packaged(kwargs)
        if self._failed.is_set() or not (self._ready.is_set() or getattr(_compiling_thread, "active", False)):
            return self.eager(*args, **kwargs)
        try:
            self._compiled = self._compiled or torch.compile(self.eager)
            with torch._inductor.config.patch(VISION_INDUCTOR_SETTINGS):
                output = self._compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - costs speed only: the eager forward answers
            log.warning("the compiled vision tower failed, continuing without it: %s", error)
            self._failed.set()
            return self.eager(*args, **kwargs)
        self._ready.set()
        return output


@dataclass
class TowerCall:
    """How the VLM calls its tower, as seen once: keyword arguments only, tensors with one row per view."""

    tensors: dict[str, torch.Tensor]  # one view's
    constants: dict[str, object]
    output_type: type  # a ModelOutput, built from the package's output (a dict)

    def save(self, path: Path) -> None:
        """Kept as JSON beside the package (written whole or not at all); nothing where the call's
        other arguments are not plain values."""
        tensors = {name: [list(example.shape), str(example.dtype)] for name, example in self.tensors.items()}
        output_type = [self.output_type.__module__, self.output_type.__qualname__]
        try:
            text = json.dumps({"tensors": tensors, "constants": self.constants, "output_type": output_type})
        except TypeError:
            return
        _write_whole(path, text)

    @classmethod
    def load(cls, path: Path) -> TowerCall | None:
        """The call kept at `path`; None where there is none (or it names no model output)."""
        try:
            kept = json.loads(path.read_text())
            module, name = kept["output_type"]
            output_type = getattr(importlib.import_module(module), name)
            tensors = {
                name: torch.empty(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
                for name, (shape, dtype) in kept["tensors"].items()
            }
        except (OSError, ValueError, KeyError, ImportError, AttributeError):
            return None
        if not (isinstance(output_type, type) and issubclass(output_type, ModelOutput)):
            return None
        return cls(tensors, kept["constants"], output_type)

    def fits(self, kwargs: dict) -> bool:
        """Whether a call is like this one (any number of views up to MAX_VIEWS)."""
        if kwargs.keys() != self.tensors.keys() | self.constants.keys():
            return False
        if any(kwargs[name] != value for name, value in self.constants.items()):
            return False
        views = {kwargs[name].shape[0] if isinstance(kwargs[name], torch.Tensor) else -1 for name in self.tensors}
        return (
            len(views) == 1
            and 1 <= views.pop() <= MAX_VIEWS
            and all(
                kwargs[name].dtype == example.dtype and kwargs[name].shape[1:] == example.shape[1:]
                for name, example in self.tensors.items()
            )
        )


class PackagedTower:
    """The tower's forward from its package, for calls that fit the one it was exported from. Its
    time for a view on this machine (what `auto` detail budgets with) can be kept beside it, so that a
    later start does not time it again while the first questions come in."""

    def __init__(self, packaged: PackagedCall, call: TowerCall, folder: Path):
        self._packaged, self._call = packaged, call
        self._timing = folder / f"{TOWER_PACKAGE}.timing.json"

    def kept_seconds_per_view(self) -> float | None:
        try:
            seconds = json.loads(self._timing.read_text())["seconds_per_view"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return seconds if isinstance(seconds, float) and seconds > 0 else None

    def keep_seconds_per_view(self, seconds: float) -> None:
        with contextlib.suppress(OSError):  # not kept (a read-only cache): timed again at the next start
            _write_whole(self._timing, json.dumps({"seconds_per_view": seconds}))

    def fits(self, kwargs: dict) -> bool:
        return self._call.fits(kwargs)

    def __call__(self, kwargs: dict):
        return self._call.output_type(**self._packaged(*(kwargs[name] for name in self._call.tensors)))


def _write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a process ending mid-write leaves no half file)."""
    write_atomically(path, lambda out: out.write(text.encode()))


def package_tower(
    vlm,
    one_view: Callable[[], None],
    exclusively: Callable[[], contextlib.AbstractContextManager],
    build: bool = True,
) -> bool:
    """Give the VLM's quickened tower its package (where `quicken` was told to keep one); whether it
    has it. Built first where there is none and `build` says: exported as `one_view` makes the VLM
    call it (in a fork of this process, or here while `exclusively` keeps all other model work out);
    the call is kept beside the package, so that a later start only loads it (no run of the tower)."""
    tower = vision_tower(vlm)
    quickened = getattr(tower, "quickened", None)
    if not isinstance(quickened, _Quickened) or quickened.packages is None:
        return False
    if quickened.packaged is not None:
        return True
    packages = quickened.packages
    try:
        kept = packages.folder / f"{TOWER_PACKAGE}.json"
        call = TowerCall.load(kept)
        packaged = packages.get(TOWER_PACKAGE, None, kind=PackagedCall) if call is not None else None
        if packaged is None:
            if not build:
                return False
            call = _seen_call(quickened, one_view)
            if call is None:
                log.info("the vision tower is called in a way not packaged here; it is compiled in the process")
                return False

            def export():
                return export_tower(quickened.eager, tower, call)

            packaged = packages.get(TOWER_PACKAGE, export, kind=PackagedCall, exclusively=exclusively)
            call.save(kept)
    except Exception as error:  # noqa: BLE001 - it is compiled in the process instead, as without packages
        log.warning("no packaged vision tower (%s); compiling it here instead", error)
        return False
    quickened.packaged = PackagedTower(packaged, call, packages.folder)
    with exclusively():  # the eager tower (calls the package does not fit) on the package's weights; not while it runs
        packages.lend_to(tower, TOWER_NAME)
    log.info("packaged vision tower ready")
    return True


def _seen_call(quickened: _Quickened, one_view: Callable[[], None]) -> TowerCall | None:
    """The call `one_view` makes to the tower (run eagerly), or None where it is not one to package."""
    seen = {}
    eager = quickened.eager

    def watch(*args, **kwargs):
        output = eager(*args, **kwargs)
        seen.setdefault("call", (args, kwargs, output))
        return output

    quickened.eager = watch
    try:
        one_view()
    finally:
        quickened.eager = eager
    if "call" not in seen:
        return None
    args, kwargs, output = seen["call"]
    tensors = {name: value for name, value in kwargs.items() if isinstance(value, torch.Tensor)}
    views = {value.shape[0] if value.dim() else 0 for value in tensors.values()}
    if args or "pixel_values" not in tensors or views != {1} or not isinstance(output, ModelOutput):
        return None
    constants = {name: value for name, value in kwargs.items() if name not in tensors}
    return TowerCall(tensors, constants, type(output))


class _CallWithTensors(torch.nn.Module):
    """The tower called with its tensors by position and its output as a dict: what export takes."""

    def __init__(self, tower: torch.nn.Module, forward: Callable, call: TowerCall):
        super().__init__()
        self.tower, self._forward, self._call = tower, forward, call

    def forward(self, *tensors: torch.Tensor):
        output = self._forward(**dict(zip(self._call.tensors, tensors, strict=True)), **self._call.constants)
        return dict(output)


def export_tower(forward: Callable, tower: torch.nn.Module, call: TowerCall) -> torch.export.ExportedProgram:
    """The tower's `forward` exported for `call`'s arguments, the number of views dynamic."""
    views = torch.export.Dim("views", min=1, max=MAX_VIEWS)
    with torch.inference_mode(False):  # as export_step: export traces outside inference mode
        two_views = tuple(torch.cat([example, example]) for example in call.tensors.values())
        return torch.export.export(
            _CallWithTensors(tower, forward, call).eval(),
            two_views,  # two: export fixes a size seen as 1
            dynamic_shapes=(tuple({0: views} for _ in two_views),),
            strict=False,
        )
