"""The decode steps compiled ahead of time into packages on disk (torch.export, then AOTInductor):
built once, and loaded by later starts in about half a second, where torch.compile traces the model
again at every start (a minute of the start's cores, and its memory).

    program = export_step(language_model, decoder._one_token, (token, position, cache, seen))
    build_package(program, path, settings)        # minutes: Inductor's C++ compile, once (path: a .so)
    step = PackagedStep.load(path)                 # half a second
    logits = step(token, position, cache, seen)    # as the step it was exported from

A step's cache (a StaticCache among its arguments) becomes inputs it writes in place (each layer's
keys, values and count), and its last argument, the filled positions (`seen`, a tensor of that
length, as for torch.compile), one dynamic size; a package serves one length of cache (a bucket of
FastDecoder's: transformers sizes the mask from the cache's length, a number export fixes). The int8
weights' scales must be in the activations' type (fast_decode.convert_weights): Inductor then packs
the weights for its own C++ GEMM, which is what makes the step fast (`python -m bench.packaged_step`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import transformers
from transformers import StaticCache

from .forked import end_with, run_forked
from .memory import give_back_freed_memory, page_out_checkpoints
from .view_cache import add_tensor

log = logging.getLogger(__name__)

# Folders of packages kept (the most recently used), one per model built from: a VLM has two, its
# language model's and its vision tower's. A package holds its model's weights.
KEEP_FOLDERS = 6
# The language model's name in an exported step: its weights' names there begin with it.
STEP_MODEL_NAME = "language_model."
# A build's scratch folder older than this was left by a process that ended.
STALE_S = 3600.0
USED = "used"  # a file in a model's folder, touched when its packages are used
EXPORT_TIMEOUT_S = 600.0  # an export takes seconds; one still running after this is stuck


def cache_tensors(cache: StaticCache) -> tuple[torch.Tensor, ...]:
    """Each layer's keys, values and count of written positions, in layer order: what a step writes."""
    return tuple(tensor for layer in cache.layers for tensor in (layer.keys, layer.values, layer.cumulative_length))


def _flattened(arguments: tuple) -> tuple[int, tuple]:
    """(where the cache is, the other arguments followed by the cache's tensors)."""
    where = next(i for i, argument in enumerate(arguments) if isinstance(argument, StaticCache))
    others = arguments[:where] + arguments[where + 1 :]
    return where, (*others, *cache_tensors(arguments[where]))


def _hold(cache: StaticCache, tensors) -> None:
    """Make each of the cache's layers hold the given (keys, values, count)."""
    for layer, (keys, values, count) in zip(cache.layers, tensors, strict=True):
        layer.keys, layer.values, layer.cumulative_length = keys, values, count


class _StepWithCacheInputs(torch.nn.Module):
    """`step(*arguments)` called with its cache's tensors as plain inputs, so that export sees them as
    inputs the step writes to rather than as constants of the graph."""

    def __init__(self, language_model: torch.nn.Module, step: Callable, cache: StaticCache, where: int, others: int):
        super().__init__()
        self.language_model = language_model  # its weights: the graph's parameters
        self._step, self._cache, self._where, self._others = step, cache, where, others

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        others, tensors = inputs[: self._others], inputs[self._others :]
        _hold(self._cache, zip(tensors[0::3], tensors[1::3], tensors[2::3], strict=True))
        return self._step(*others[: self._where], self._cache, *others[self._where :])


def export_step(language_model: torch.nn.Module, step: Callable, arguments: tuple) -> torch.export.ExportedProgram:
    """Export `step` (a method over `language_model`) called with the example `arguments`: a placed
    StaticCache among them (a prompt was prefilled into it), the filled positions last."""
    where, inputs = _flattened(arguments)
    cache = arguments[where]
    held = [(layer.keys, layer.values, layer.cumulative_length) for layer in cache.layers]
    others = len(arguments) - 1
    filled = torch.export.Dim("filled", min=2, max=cache.layers[0].max_cache_len - 1)
    dynamic = [None] * len(inputs)
    dynamic[others - 1] = {0: filled}
    try:
        # Export traces outside inference mode (a warm-up runs inside it), where tensors made inside it
        # cannot be written to: the example's tensors are copies made there.
        with torch.inference_mode(False):
            inputs = tuple(tensor.clone() for tensor in inputs)
            return torch.export.export(
                _StepWithCacheInputs(language_model, step, cache, where, others).eval(),
                inputs,
                dynamic_shapes=(tuple(dynamic),),  # forward(*inputs): one argument, a tuple
                strict=False,
            )
    finally:
        _hold(cache, held)


# A package's constants (its weights, as exported and as Inductor packed them) are kept out of its
# library, in a file of their own (`_weights_path`) that a start reads into memory of its own: read out
# of the library's mapping, they were ~300 MB of its file pages resident beside the copy for a moment
# (the warm start's peak: 1724 MiB against 1400 held, SmolVLM2-256M). And a package whose constants
# another one loaded already reads none of them (SharedConstants).
CONSTANTS_APART = {
    "aot_inductor.package_constants_in_so": False,
    "aot_inductor.package_constants_on_disk_format": "pickle_weights",
}


def build_package(program: torch.export.ExportedProgram, path: Path, inductor_settings: dict) -> Path:
    """Compile `program` into the library `path` (a .so, written whole or not at all, last), its
    constants beside it (`_weights_path`) with a digest of each (`_digests_path`): what lets packages
    share their weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=_scratch_prefix()) as scratch:
        archive = torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(Path(scratch) / "package.pt2"),
            inductor_configs={**inductor_settings, **CONSTANTS_APART},
        )
        library, constants = _unpack(Path(archive), Path(scratch))
        torch.save(constants, Path(scratch) / "weights.pt")
        (Path(scratch) / "weights.pt").replace(_weights_path(path))
        _digests_path(path).write_text(json.dumps(constant_digests(constants)))
        library.replace(path)
    return path


def _unpack(archive: Path, folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The compiled library out of an AOTInductor archive (a zip), and its constants by the names the
    library gives them (the archive keeps them by their names in the model, one pickled tensor per
    storage). Kept unpacked, the library is loaded in place at every start (the archive's loader
    unpacks it to the temporary folder each time) and given constants loaded already."""
    with zipfile.ZipFile(archive) as zipped:
        (member,) = (name for name in zipped.namelist() if name.endswith(".so"))
        with zipped.open(member) as source, open(folder / "library.so", "wb") as target:
            shutil.copyfileobj(source, target, 1 << 24)
        (config,) = (name for name in zipped.namelist() if name.endswith("/weights_config.json"))
        weights_folder = config.split("/", 1)[0] + "/data/weights/"  # beside {archive}/data/aotinductor/
        by_fqn = {}
        for fqn, (stored, shape, stride, offset) in json.loads(zipped.read(config)).items():
            whole = torch.load(io.BytesIO(zipped.read(weights_folder + stored)), weights_only=True).detach()
            by_fqn[fqn] = whole.as_strided(shape, stride, offset)
    library = folder / "library.so"
    fqns = torch._C._aoti.AOTIModelContainerRunnerCpu(str(library), 1).get_constant_names_to_original_fqns()
    return library, {name: by_fqn[fqn] for name, fqn in fqns.items()}


def _weights_path(library: Path) -> Path:
    return library.with_suffix(".weights.pt")


def _digests_path(library: Path) -> Path:
    return library.with_suffix(".constants.json")


def constant_digests(constants: dict[str, torch.Tensor]) -> dict[str, str]:
    """{constant's name: digest of its strides, type, shape and bytes}."""
    digests = {}
    for name, tensor in constants.items():
        digest = hashlib.blake2b(str(tensor.stride()).encode(), digest_size=16)  # shared as laid out
        add_tensor(digest, tensor)
        digests[name] = digest.hexdigest()
    return digests


class SharedConstants:
    """The constants of the libraries loaded so far, by digest: a library is given those loaded
    already instead of a copy of its own. The one-token step and the batch step hold the same weights,
    packed the same way (306 MB for SmolVLM2-256M, in both), where the build's autotuning chose the
    same kernels for both. The runners read these tensors by address: they are kept as long as this
    object is, and each runner keeps this object."""

    def __init__(self):
        self._by_digest: dict[str, torch.Tensor] = {}
        self._by_name: dict[str, torch.Tensor] = {}  # by their name in the exported program

    def load(self, library: Path):
        """A runner of `library`, on the constants loaded already and its own others."""
        digests = json.loads(_digests_path(library).read_text())
        missing = {name for name, digest in digests.items() if digest not in self._by_digest}
        # A library that shares nothing reads its file into memory (no page of it mapped); one that
        # shares some maps it and copies out only those it lacks.
        shares = len(missing) < len(digests)
        own = torch.load(_weights_path(library), weights_only=True, mmap=shares) if missing else {}
        constants = {}
        for name, digest in digests.items():
            if digest not in self._by_digest:
                self._by_digest[digest] = own[name].clone() if shares else own[name]
            constants[name] = self._by_digest[digest]
        del own  # (a mapping where it shares some: closed, its pages read with it)
        with _known_warning_hidden(b"Calling constant_folding in model"):  # nothing is folded at run time
            runner = torch._C._aoti.AOTIModelContainerRunnerCpu(str(library), 1, constants)
        for name, fqn in runner.get_constant_names_to_original_fqns().items():
            self._by_name.setdefault(fqn, constants[name])
        return runner

    def lend_to(self, module: torch.nn.Module, prefix: str) -> int:
        """Point the weights of `module` (the eager model a package was exported from, named `prefix`
        there) at the package's constants of equal content, so that the two hold one copy: a package
        keeps its weights as they were (beside any it packs), and the eager model still runs a prompt
        and whatever the packages do not take. Returns the bytes `module` no longer holds alone."""
        lent = 0
        for name, constant in self._by_name.items():
            if name.startswith(prefix):
                lent += _take_constant(module, name.removeprefix(prefix), constant)
        if lent:
            module.lent_weights_from = self  # whose constants its weights are
        return lent

    def quantized_parts(self, prefix: str) -> dict[str, dict[int, torch.Tensor]]:
        """The parts of the quantized weights (torchao's: data, scales) of the module named `prefix`
        in the exported programs: by the weight's name in that module, by their place in the weight."""
        parts: dict[str, dict[int, torch.Tensor]] = {}
        for name, constant in self._by_name.items():
            match = _SUBCLASS_PART.fullmatch(name.removeprefix(prefix)) if name.startswith(prefix) else None
            if match is not None:
                weight = f"{match['module']}.{match['weight']}"
                parts.setdefault(weight, {})[int(match["part"])] = constant
        return parts

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` is one of these constants (not a copy of one)."""
        return any(tensor.data_ptr() == constant.data_ptr() for constant in self._by_name.values())


# How export names a part of a tensor subclass weight (torchao's int8: its data, its scales).
_SUBCLASS_PART = re.compile(r"(?P<module>.+)\.parametrizations\.(?P<weight>\w+)\.original(?P<part>\d+)")


def _take_constant(module: torch.nn.Module, name: str, constant: torch.Tensor) -> int:
    """Make `module`'s tensor `name` (as export named it) `constant` where the two are equal and laid
    out alike; the bytes that frees (0 where it is not taken)."""
    with contextlib.suppress(AttributeError):
        parameter = module.get_parameter(name)  # a plain weight (or one an export here parametrized)
        if not _a_copy_of(parameter.data, constant):
            return 0
        parameter.data = constant
        return constant.numel() * constant.element_size()
    match = _SUBCLASS_PART.fullmatch(name)
    if match is None:
        return 0
    with contextlib.suppress(AttributeError):
        weight = getattr(module.get_submodule(match["module"]), match["weight"])
        part = weight.tensor_data_names[int(match["part"])]  # torchao's subclasses name their parts
        if _a_copy_of(getattr(weight, part), constant):
            setattr(weight, part, constant)
            return constant.numel() * constant.element_size()
    return 0


def _a_copy_of(tensor: torch.Tensor, constant: torch.Tensor) -> bool:
    """Whether `tensor` holds what `constant` does, laid out alike, in memory of its own."""
    return (
        type(tensor) is torch.Tensor
        and tensor.data_ptr() != constant.data_ptr()
        and (tensor.dtype, tensor.shape, tensor.stride()) == (constant.dtype, constant.shape, constant.stride())
        and torch.equal(_words(tensor), _words(constant))
    )


def _words(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's bytes as 8-byte words (bytes where they do not divide): compared 5-8x
    faster than int8 or bfloat16 elements (0.2 s a start at SmolVLM2-256M's size), and byte for byte."""
    if not tensor.is_contiguous():
        return tensor
    data = tensor.reshape(-1).view(torch.uint8)
    return data.view(torch.int64) if data.numel() % 8 == 0 and data.data_ptr() % 8 == 0 else data


@contextlib.contextmanager
def _known_warning_hidden(start: bytes):
    """The C++ runtime's lines on the standard error that begin with `start` left out, others kept."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().splitlines(keepends=True):
                if not line.removeprefix(b"[WARNING] ").startswith(start):
                    os.write(2, line)


class PackagedCall:
    """A package's program, called with the tensors it was exported with."""

    def __init__(self, runner, constants: SharedConstants):
        self._runner = runner
        self._constants = constants  # the memory the runner's weights are
        self._output = torch.utils._pytree.treespec_loads(runner.get_call_spec()[1])

    @classmethod
    def load(cls, path: Path, shared: SharedConstants | None = None):
        shared = shared or SharedConstants()
        return cls(shared.load(path), shared)

    def __call__(self, *tensors: torch.Tensor):
        return torch.utils._pytree.tree_unflatten(self._runner.run(list(tensors)), self._output)


class PackagedStep(PackagedCall):
    """A package's step, called as the step it was exported from."""

    def __call__(self, *arguments) -> torch.Tensor:
        return super().__call__(*_flattened(arguments)[1])


class StepPackages:
    """One model's step packages (or its vision tower's), in a folder named by a digest of all they
    are built from: the weights before quantization and the quantization `recipe` (so that a later
    start takes the quantized weights from the packages rather than quantizing again:
    quantized_weights), the model's config, the code of the steps, the versions of torch, torchao and
    transformers, the CPU's instruction set and Inductor's settings. So a package never serves another
    model, and an upgrade builds afresh."""

    def __init__(self, root: Path, model: torch.nn.Module, settings: dict, code: Iterable[Path], recipe: str):
        self.folder = root / _digest(model, {"inductor": settings, "quantization": recipe}, code)
        # The digest read every weight: those still in the checkpoint's mapping counted as the start's
        # memory until the end of the load (its peak, SmolVLM2-256M: +315 MB). The page cache keeps them.
        page_out_checkpoints()
        self.settings = settings
        self._shared = SharedConstants()
        self._loaded: dict[str, PackagedCall] = {}
        drop_scratch_of_ended_builds(root)  # a start after one stopped mid-build (hundreds of MB)
        if self.folder.is_dir():
            (self.folder / USED).touch()  # the last to be dropped (`tidy`)

    def get(
        self,
        name: str,
        export: Callable[[], torch.export.ExportedProgram] | None,
        kind: type = PackagedStep,
        exclusively: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> PackagedCall | None:
        """The package `name` as a `kind` (loaded once), built first if there is none (`export`
        makes its program, `_build_apart`); without `export`, None when there is none.
        `exclusively`: what keeps other model work out of an export run in this process."""
        if name not in self._loaded:
            path = self.folder / f"{name}.so"
            if not path.is_file():
                if export is None:
                    return None
                self._build_apart(export, exclusively, path)
            self._loaded[name] = kind.load(path, self._shared)
        return self._loaded[name]

    @classmethod
    def open(cls, root: Path, model: torch.nn.Module, settings: dict, code: Iterable[Path], recipe: str, what: str):
        """`StepPackages(...)`, or None where its folder cannot be had (then `what` is compiled in the
        process, as without packages)."""
        try:
            return cls(root, model, settings, code, recipe)
        except Exception as error:  # noqa: BLE001 - costs the start's speed only
            log.warning("no packages for the %s (%s); compiled in this process instead", what, error)
            return None

    def kept_weights(self, names: Iterable[str], prefix: str, kind: type = PackagedStep) -> dict:
        """The quantized weights' parts that the packages `names` built by an earlier start keep
        (SharedConstants.quantized_parts), loading those there are now, as their users would next;
        none where one fails to load (its user meets the error again, and says so)."""
        try:
            for name in names:
                self.get(name, None, kind)
        except Exception as error:  # noqa: BLE001 - the weights are quantized instead
            log.debug("no weights from the packages: %s", error)
            return {}
        return self._shared.quantized_parts(prefix)

    def lend_to(self, module: torch.nn.Module, prefix: str) -> int:
        """`module` (named `prefix` in the exported programs) runs on the loaded packages' copy of
        its weights (SharedConstants.lend_to), and the memory of its own copy goes back to the system;
        the bytes it held alone before."""
        lent = self._shared.lend_to(module, prefix)
        if lent:
            give_back_freed_memory()
        return lent

    def _build_apart(
        self,
        export: Callable[[], torch.export.ExportedProgram],
        exclusively: Callable[[], contextlib.AbstractContextManager],
        path: Path,
    ) -> None:
        """Export in a fork of this process (forked.py), made between replies (`exclusively`):
        torch.export traces for seconds (8 s for SmolVLM2-256M's step on 2 cores), and run here, no
        reply could use the model meanwhile: a question asked as it began waited for it (a cold
        start's first answer after 24-27 s instead of 10-11). Where there is no fork: here,
        `exclusively`. Then build in a process of its own: Inductor's compile is minutes of Python
        (the GIL a reply beside it needs) and a gigabyte or more of memory, both gone when that
        process exits. It runs at the caller's priority (a warm-up's: lowered), and ends if the
        caller does."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / USED).touch()
        tidy(self.folder.parent, keep=self.folder)
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=_scratch_prefix()) as scratch:
            saved = Path(scratch) / "program.pt2"

            def export_to_file():
                torch.export.save(export(), saved)

            if not run_forked(export_to_file, f"exporting {path.stem}", EXPORT_TIMEOUT_S, quiet=exclusively):
                with exclusively():
                    export_to_file()
            command = [sys.executable, "-m", __name__, str(saved), str(path), json.dumps(self.settings)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building {path.name} failed: {done.stderr.strip()[-2000:]}")


def _scratch_prefix() -> str:
    """A build's scratch folder is named by the process writing it: once that process has ended
    (stopped mid-build: Ctrl-C, a kill), the folder is left over and the next start drops it."""
    return f"export-{os.getpid()}-"


def drop_scratch_of_ended_builds(root: Path) -> None:
    """Drop the scratch folders in `root`'s model folders whose process has ended (or, named
    otherwise, that were last written STALE_S ago)."""
    stale = time.time() - STALE_S
    for scratch in root.glob("*/export-*"):
        writer = scratch.name.split("-")[1]
        ended = not _running(int(writer)) if writer.isdigit() else scratch.stat().st_mtime < stale
        if ended:
            shutil.rmtree(scratch, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def tidy(root: Path, keep: Path) -> None:
    """Drop what builds left behind in `root` (drop_scratch_of_ended_builds), and all but the
    KEEP_FOLDERS folders used last (`keep` among them)."""
    drop_scratch_of_ended_builds(root)
    others = [folder for folder in root.iterdir() if folder.is_dir() and folder != keep]
    others.sort(key=_last_used)
    for folder in others[: max(0, len(others) - (KEEP_FOLDERS - 1))]:
        shutil.rmtree(folder, ignore_errors=True)


def _last_used(folder: Path) -> float:
    used = folder / USED
    return (used if used.exists() else folder).stat().st_mtime


def _digest(model: torch.nn.Module, settings: dict, code: Iterable[Path]) -> str:
    import torchao

    digest = hashlib.blake2b(digest_size=12)
    versions = (torch.__version__, torchao.__version__, transformers.__version__)
    for text in (*versions, torch.backends.cpu.get_cpu_capability(), json.dumps(settings, sort_keys=True)):
        digest.update(text.encode())
    digest.update(model.config.to_json_string().encode())
    for path in code:
        digest.update(path.read_bytes())
    # Outside inference mode (a warm-up runs in it), where torchao's int8 weights cannot be detached.
    with torch.inference_mode(False):
        parts = [
            (name, part.detach().contiguous())
            for name, tensor in sorted(model.state_dict().items())
            for part in _plain_tensors(tensor)
        ]
    # Each part hashed on its own, on all cores (hashlib lets the GIL go over a large buffer): a
    # third of a second at each start for SmolVLM2-256M's weights, on one core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for (name, _), part_digest in zip(parts, pool.map(_bytes_digest, [part for _, part in parts]), strict=True):
            digest.update(name.encode())
            digest.update(part_digest)
    return digest.hexdigest()


def _bytes_digest(tensor: torch.Tensor) -> bytes:
    return hashlib.blake2b(tensor.view(-1).view(torch.uint8).numpy(), digest_size=16).digest()


def _plain_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """A tensor's plain tensors: a quantized weight's (torchao's subclasses) are its data and scales."""
    if type(tensor) in (torch.Tensor, torch.nn.Parameter):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [part for name in names for part in _plain_tensors(getattr(tensor, name))]


def _build_main(argv: list[str]) -> None:
    """python -m assistant.models.packaged_step PROGRAM PACKAGE SETTINGS_JSON (what StepPackages runs)."""
    program, package, settings = argv
    end_with(os.getppid())
    build_package(torch.export.load(program), Path(package), json.loads(settings))


if __name__ == "__main__":
    _build_main(sys.argv[1:])
