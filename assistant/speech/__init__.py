"""Speech: Whisper transcription behind one interface, with several backends.

transcriber = load_speech(settings)        # the profile's model, or settings.speech_model
samples = read_audio_file("question.webm")  # any common format -> float32 mono 16 kHz
transcriber.transcribe(samples, transcribe_options(settings)).text
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..profiles import OFFLINE_SPEECH_MODEL, resolve_profile
from .transcriber import (
    BACKENDS,
    Segment,
    SpeechError,
    SpeechModelSpec,
    TranscribeOptions,
    Transcriber,
    Transcript,
    load_transcriber,
)

__all__ = [
    "BACKENDS",
    "Segment",
    "SpeechError",
    "SpeechModelSpec",
    "TranscribeOptions",
    "Transcriber",
    "Transcript",
    "load_speech",
    "load_transcriber",
    "transcribe_options",
]

log = logging.getLogger(__name__)


def load_speech(settings) -> Transcriber:
    """The Whisper the settings ask for. Under the `auto` profile, a speech model that cannot be had
    (no network, not cached) falls back to the packaged Whisper base, which always works offline."""
    profile = resolve_profile(settings.profile).profile
    spec = SpeechModelSpec(
        backend=settings.speech_backend,
        model=settings.speech_model or profile.speech_model,
        device=settings.device,
        compute_type=settings.speech_compute_type,
        extra={"cache_dir": settings.cache_dir},
    )
    try:
        return load_transcriber(spec)
    except SpeechError as error:
        if not _may_fall_back(settings, spec):
            raise
        log.warning(
            "speech model %s unavailable (%s); using the packaged Whisper %s", spec.model, error, OFFLINE_SPEECH_MODEL
        )
        return load_transcriber(replace(spec, backend="faster-whisper", model=OFFLINE_SPEECH_MODEL))


def _may_fall_back(settings, spec: SpeechModelSpec) -> bool:
    return settings.profile == "auto" and settings.speech_model is None and spec.model != OFFLINE_SPEECH_MODEL


def transcribe_options(
    settings,
    language: str | None = None,
    translate: bool | None = None,
    timestamps: bool = False,
    language_hint: str | None = None,
) -> TranscribeOptions:
    """Per-request options: the arguments given win over the settings' defaults."""
    translate = settings.speech_translate if translate is None else translate
    return TranscribeOptions(
        language=language or settings.speech_language,
        task="translate" if translate else "transcribe",
        timestamps=timestamps,
        beam_size=settings.speech_beam_size,
        vad=settings.speech_vad,
        language_hint=language_hint,
        short_window=settings.speech_short_window,
        short_beam_size=settings.speech_short_beam_size,
    )
