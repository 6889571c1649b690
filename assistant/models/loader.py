"""The one entry point that turns settings into a loaded model.

settings.profile / settings.model -> a source (hub id, local dir, or tiny:<family>)
    -> device and dtype for this machine -> AutoProcessor + AutoModelForImageTextToText
    -> cross-part checks (image token in the vocabulary, tokenizer fits the embeddings)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from ..devices import pick_device
from ..errors import ModelUnavailableError
from ..hub import hub_model_available, is_path, unavailable_message
from ..profiles import TINY_PREFIX, fall_back_to_starter, resolve_profile
from ..settings import MiB, Settings
from .composed import is_composed_dir, load_composed
from .fast_decode import DecodeSpeed, can_compile, describe, fast_decoder, packages_folder
from .fast_vision import quicken_vision, vision_tower
from .local import LocalModel, eos_token_ids, fast_loop_runs, text_causal_lm
from .memory import give_back_freed_memory, own_mapped_weights, page_out_checkpoints, page_out_gpu_libraries
from .processed_images import RememberingImageProcessor
from .view_cache import remember_views

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What to do when a hub model can't be had.
INSTEAD = (
    "Either use another profile (--profile tiny works offline), give a local model directory with --model PATH, "
    "or download it once where there is network (`hf download {source}`) and then run with HF_HUB_OFFLINE=1."
)
TINY_BUILD_VERSION = 1  # bump when tiny.py changes what it builds, so caches are rebuilt


def load_model(settings: Settings) -> LocalModel:
    """Load the model the settings ask for: `settings.model` if given, else the profile's."""
    resolved = resolve_profile(settings.profile)
    if settings.profile == "auto" and settings.model is None:
        available, why = hub_model_available(resolved.profile.model)
        if not available:
            resolved = fall_back_to_starter(resolved, why)
    source = settings.model or resolved.profile.model
    if source.startswith(TINY_PREFIX):
        source = str(ensure_tiny_model(source.removeprefix(TINY_PREFIX), settings.cache_dir))
    device = pick_device(settings.device)
    if device.type == "cpu":
        page_out_gpu_libraries()  # before the load's peak
    dtype_name = settings.dtype if settings.dtype != "auto" else resolved.profile.dtype
    if is_composed_dir(source):
        loaded = load_composed(
            source, device, pick_dtype(dtype_name, device), settings.cache_dir, decode_speed(settings, device)
        )
    else:
        loaded = _load_hub_model(source, device, pick_dtype(dtype_name, device), settings)
    loaded.details.update(profile=resolved.profile.name, reason=resolved.reason)
    give_back_freed_memory()  # what loading converted and dropped (models/memory.py)
    return loaded


def _load_hub_model(source: str, device: torch.device, dtype: torch.dtype, settings: Settings) -> LocalModel:
    return load_pretrained(
        source,
        device=device,
        dtype=dtype,
        device_map=settings.device_map,
        trust_remote_code=settings.trust_remote_code,
        context_tokens=settings.context_tokens,
        speed=decode_speed(settings, device),
        cache_dir=settings.cache_dir,
        image_budget_s=settings.image_budget_s,
        image_cache_bytes=settings.image_cache_mb * MiB,
    )


def decode_speed(settings: Settings, device: torch.device) -> DecodeSpeed | None:
    """How a local model decodes (see fast_decode and the settings); None: transformers' generate."""
    if settings.fast_decode == "off" or (settings.fast_decode == "auto" and device.type != "cpu"):
        return None
    compile_step = settings.compile_decode == "on"
    if compile_step and not can_compile():
        log.warning(
            "no C++ compiler found (g++): decoding without compiling, which is slower; install g++ for full speed"
        )
        compile_step = False
    weights = settings.fast_decode if settings.fast_decode != "auto" else "int8" if compile_step else "bfloat16"
    return DecodeSpeed(weights=weights, compile=compile_step, batch=settings.max_batch)


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """Explicit dtypes win; "auto" is bf16 on CUDA (fp16 on GPUs without bf16) and fp32 on CPU,
    where bf16 matmuls are slower than fp32 on most processors."""
    if setting != "auto":
        return DTYPES[setting]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_pretrained(
    source: str,
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | None = None,
    trust_remote_code: bool = False,
    context_tokens: int | None = None,
    speed: DecodeSpeed | None = None,
    cache_dir: Path | None = None,
    image_budget_s: float = 1.5,
    image_cache_bytes: int = 128 * MiB,
) -> LocalModel:
    """Load a pretrained VLM (hub id or local directory) with its processor and chat template; with
    `speed`, its language model decodes in the fast loop (when it is one the loop runs, FAST_TEXT_MODELS).
    The vision tower's output for each view is kept, up to `image_cache_bytes` (models/view_cache.py),
    and the processor's for the photos seen last (models/processed_images.py); 0: neither."""
    _check_local_path(source)
    started = time.perf_counter()
    try:
        # The config first: it says whether the model needs code of its own before anything runs.
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            config=config,
            dtype=_loading_dtype(config, dtype, speed, device_map),
            device_map=device_map,
            trust_remote_code=trust_remote_code,
        )
    except OSError as error:
        instead = INSTEAD.format(source=source)
        raise ModelUnavailableError(unavailable_message("model", source, error, instead)) from None
    except ValueError as error:
        raise ModelUnavailableError(_unsupported_message(source, error)) from None
    if device_map is None:
        model.to(device)
    model.eval()
    eos = eos_token_ids(model, processor.tokenizer)
    decoder = None
    if speed is not None and device_map is None:  # a model spread over devices stays with `generate`
        decoder, dtype = _fast_decoder(model, speed, dtype, cache_dir)
    tower = vision_tower(model)
    views = remember_views(model, tower, image_cache_bytes) if tower is not None else None
    if image_cache_bytes > 0 and getattr(processor, "image_processor", None) is not None:
        processor.image_processor = RememberingImageProcessor(processor.image_processor)  # turns bring photos back
    loaded = LocalModel(
        name=source,
        model=model,
        processor=processor,
        device=model.device,
        dtype=dtype,
        context_tokens=_context_tokens(model.config, context_tokens),
        image_token_id=_image_token_id(model.config),
        eos_token_ids=eos,
        load_seconds=time.perf_counter() - started,
        details={"decode": describe(decoder)},
        decoder=decoder,
        image_budget_s=image_budget_s,
        views=views,
    )
    _check_parts_agree(loaded)
    return loaded


def _loading_dtype(config, dtype: torch.dtype, speed: DecodeSpeed | None, device_map: str | None) -> torch.dtype:
    """The type the weights are loaded in: bfloat16 straight away where the fast loop will run the VLM in
    it (_fast_decoder), rather than float32 first and converted after, which held both at once and
    doubled the app's peak memory for nothing (the rounding is the same)."""
    fast = speed is not None and device_map is None and fast_loop_runs(config)
    return torch.bfloat16 if fast and speed.weights != "float32" and dtype == torch.float32 else dtype


def _fast_decoder(model, speed: DecodeSpeed, dtype: torch.dtype, cache_dir: Path | None):
    """(the fast loop over the VLM's language model, the dtype the rest of the VLM now runs in). Below
    float32 the whole VLM goes to bfloat16 first: its own forward merges the image features into the
    decoder's embeddings, which must agree in type, and the vision tower is faster so; where the decode
    step is compiled, the vision tower is too, with int8 layers (models/fast_vision.py)."""
    language_model = text_causal_lm(model)
    if language_model is None:
        return None, dtype
    if speed.weights != "float32":
        model.to(torch.bfloat16)
        dtype = torch.bfloat16
    if speed.compile and not quicken_vision(model, packages_folder(speed, cache_dir, model.device)):
        log.info("no vision tower found to compile in %s", type(model).__name__)
    if speed.weights == "int8":
        page_out_checkpoints()  # the tower's, read to make its int8 weights: not at the peak the LM's make
    decoder = fast_decoder(language_model, speed, cache_dir)
    if speed.weights == "int8":  # most weights are new ones now: the checkpoint's mapping can go
        own_mapped_weights(model)
    return decoder, dtype


def ensure_tiny_model(family: str, cache_dir: Path) -> Path:
    """A tiny random model of `family`, built once into the cache (atomically, so concurrent
    processes never see half a model) and reused."""
    from .tiny import build_tiny_model

    target = Path(cache_dir) / "tiny" / f"{family}-v{TINY_BUILD_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=target.parent))
    try:
        build_tiny_model(family, staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_local_path(source: str) -> None:
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{source} is not a model directory (it has no config.json)")
    elif is_path(source):
        raise ModelUnavailableError(f"model directory {source} does not exist")


def _unsupported_message(source: str, error: ValueError) -> str:
    if "trust_remote_code" in str(error):
        return (
            f"{source} runs code of its own to load; it is not run unless you trust it: "
            f"read that code, then pass --trust-remote-code (or ASSISTANT_TRUST_REMOTE_CODE=1)"
        )
    first_line = str(error).splitlines()[0]
    return f"{source} is not a vision-language model that transformers can load here ({first_line})"


def _context_tokens(config, override: int | None) -> int:
    text_config = config.get_text_config()
    native = getattr(text_config, "max_position_embeddings", None) or 4096
    return min(override, native) if override else native


def _image_token_id(config) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def _check_parts_agree(loaded: LocalModel) -> None:
    """The tokenizer and the model come from one directory but can still disagree; say so clearly."""
    embeddings = loaded.model.get_input_embeddings().num_embeddings
    if len(loaded.tokenizer) > embeddings:
        raise ModelUnavailableError(
            f"{loaded.name}: the tokenizer has {len(loaded.tokenizer)} tokens but the model's embedding "
            f"table only {embeddings}: they are not from the same model"
        )
    if loaded.image_token_id is not None and loaded.image_token_id >= len(loaded.tokenizer):
        raise ModelUnavailableError(
            f"{loaded.name}: the model's image token id {loaded.image_token_id} is not in the tokenizer "
            f"({len(loaded.tokenizer)} tokens)"
        )
