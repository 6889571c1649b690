"""The speech-to-text contract every Whisper backend meets, and the one entry point that loads one.

    transcriber = load_transcriber(SpeechModelSpec(backend="faster-whisper", model="base"))
    transcript = transcriber.transcribe(samples, options)  # samples: float32 mono 16 kHz (speech.audio)
    transcript.text == ""  ->  no speech was detected (never a hallucinated "Thank you.")

`speech.load_speech(settings)` builds the spec from the settings and the profile.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from ..errors import SpeechError

Task = Literal["transcribe", "translate"]

# backend name -> "module:factory"; imported only when chosen, so an optional backend that is not
# installed costs nothing until someone asks for it.
BACKENDS = {
    "faster-whisper": "assistant.speech.faster_whisper:FasterWhisperTranscriber",
    "transformers": "assistant.speech.transformers_whisper:TransformersTranscriber",
    "openai-whisper": "assistant.speech.openai_whisper:OpenAIWhisperTranscriber",
}


SILENCE_RMS = 1e-3  # -60 dBFS: below a quiet room's noise floor; nothing anyone said


def mono_samples(samples: np.ndarray) -> np.ndarray:
    """`samples` as a contiguous 1-D float32 array (mono, 16 kHz, [-1, 1]); anything else is a SpeechError."""
    audio = np.ascontiguousarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise SpeechError(f"speech samples must be mono, shape (n,); got shape {audio.shape}")
    return audio


def is_silent(audio: np.ndarray) -> bool:
    """True when the RMS level is below SILENCE_RMS (or there are no samples): every backend
    answers "no speech" for such input without running a model that might invent words."""
    return audio.size == 0 or float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < SILENCE_RMS


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float  # seconds
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str  # the whole transcript, stripped; "" when no speech was detected
    language: str  # ISO 639-1 code, detected or forced
    duration: float  # seconds of audio transcribed
    segments: tuple[Segment, ...] = ()
    language_probability: float | None = None  # None when the language was forced

    @property
    def has_speech(self) -> bool:
        return bool(self.text)


SILENT_LANGUAGE = "en"  # reported for silent input when no language was forced: nothing to detect it from


def silent_transcript(duration: float, forced_language: str | None) -> Transcript:
    """What every backend answers for input with no speech: no words, and no model run."""
    return Transcript("", forced_language or SILENT_LANGUAGE, duration, (), None if forced_language else 0.0)


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # ISO 639-1 code to force, e.g. "en"; None detects it
    task: Task = "transcribe"  # "translate" gives English text whatever the language spoken
    timestamps: bool = False  # keep segment times (they are always in .segments; this asks for accuracy)
    beam_size: int = 5  # 1 is greedy: faster, slightly less accurate
    vad: bool = True  # skip non-speech with voice activity detection (prevents hallucinations in silence)
    # The language last heard in this conversation: kept when detection on a short clip is unsure of
    # another (faster-whisper's short window; other backends detect as usual).
    language_hint: str | None = None
    short_window: bool = True  # faster-whisper: fit the encoder window to a short clip (False: always 30 s)
    short_beam_size: int = 1  # the beam on the short window: greedy (see speech.window)

    def __post_init__(self) -> None:
        if self.task not in ("transcribe", "translate"):
            raise SpeechError(f"unknown speech task {self.task!r}; use 'transcribe' or 'translate'")
        for language in (self.language, self.language_hint):
            if language is not None and not (2 <= len(language) <= 3 and language.isalpha()):
                raise SpeechError(f"language must be an ISO 639-1 code such as 'en' or 'fr', got {language!r}")
        for beam_size in (self.beam_size, self.short_beam_size):
            if not 1 <= beam_size <= 16:
                raise SpeechError(f"beam_size must be between 1 and 16, got {beam_size}")


class Transcriber(Protocol):
    backend: str  # a key of BACKENDS
    model_name: str  # what was loaded, for messages and benchmarks

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions = TranscribeOptions()) -> Transcript:
        """Transcribe float32 mono 16 kHz samples (any length: long audio is transcribed whole)."""
        ...


@dataclass(frozen=True)
class SpeechModelSpec:
    """Which Whisper to load and how: from the settings, or built by tests."""

    backend: str = "faster-whisper"
    model: str = "base"  # a packaged name (base, tiny.en), a hub id or size name, a local dir or .pt file
    device: str = "auto"  # auto: CUDA when present
    compute_type: str = "auto"  # faster-whisper: auto = int8 on CPU, float16 on CUDA
    cpu_threads: int = 0  # 0: the backend's default
    extra: dict = field(default_factory=dict)


def load_transcriber(spec: SpeechModelSpec) -> Transcriber:
    """Load the backend named in `spec`; an unknown name lists the backends that exist."""
    if spec.backend not in BACKENDS:
        raise SpeechError(f"unknown speech backend {spec.backend!r}; the backends are: {', '.join(BACKENDS)}")
    module_name, factory_name = BACKENDS[spec.backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = f"pip install -e '.[{spec.backend}]'" if spec.backend == "openai-whisper" else "pip install -e ."
        raise SpeechError(
            f"the {spec.backend} speech backend is not installed ({error.name} is missing); install it with: {extra}"
        ) from None
    return getattr(module, factory_name).load(spec)
