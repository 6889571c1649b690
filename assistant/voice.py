"""Speech in and out for one settings object: Whisper for what people say, the piper voice for what
the assistant says. Each model is loaded on first use, so text-only users never pay for them, and
neither needs the language model: `assistant transcribe` and `assistant say` use a Voice alone.

    voice = Voice(settings)
    voice.transcribe_file("question.m4a").text
    voice.speak("Hello there.")                      # Speech: samples and their rate
    for event in voice.spoken(reply): ...             # the reply's events, each sentence spoken as it ends
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .errors import AssistantError, SynthesisError
from .events import Event
from .settings import Settings
from .speech import TranscribeOptions, Transcriber, Transcript, load_speech, transcribe_options
from .speech.audio import SAMPLE_RATE, AudioLimits, decode_audio, read_audio_file
from .speech.call import CallListener
from .speech.live import LiveTranscription
from .speech.speakable import speakable
from .speech.spoken_reply import spoken
from .speech.synthesizer import Speech, Synthesizer, load_synthesizer
from .speech.turns import TurnSettings

# The speech warm-up runs once the assistant has not answered for WARM_UP_QUIET_S (a question asked as
# the app starts comes first), or after WARM_UP_PATIENCE_S whatever happens.
WARM_UP_QUIET_S = 2.0
WARM_UP_PATIENCE_S = 120.0

log = logging.getLogger(__name__)


class Voice:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._transcriber: Transcriber | None = None
        self._synthesizer: Synthesizer | None = None
        self._lock = threading.Lock()

    # --- hearing

    @property
    def transcriber(self) -> Transcriber:
        """The speech model, loaded on first use."""
        with self._lock:
            if self._transcriber is None:
                self._transcriber = load_speech(self.settings)
            return self._transcriber

    @property
    def transcriber_loaded(self) -> bool:
        return self._transcriber is not None

    def load_in_background(self) -> threading.Thread:
        """Load the speech model now, beside other work (the app's start calls this before loading
        its language model). Whisper's load reads the whole float16 model before making its int8
        weights (base: +257 MiB for a moment, +106 MiB held): done while the language model loads,
        that moment is not on top of all the app holds (loaded by the warm-up 2 s after the first
        answer, it was the app's peak). A failure is met again, and reported, by the warm-up."""

        def load() -> None:
            with contextlib.suppress(AssistantError):
                _ = self.transcriber  # the property loads it

        thread = threading.Thread(target=load, name="speech-load", daemon=True)
        thread.start()
        return thread

    def warm_up(self, idle: Callable[[], bool] = lambda: True) -> threading.Thread:
        """Load the speech model and run it once, in the background: the app calls this as it starts,
        so the first voice question costs only its own transcription (not a load of several seconds
        and the backend's first-call set-up). Each run waits until `idle()` has said for WARM_UP_QUIET_S
        that the assistant is not answering (at most WARM_UP_PATIENCE_S): on a small CPU, a second of
        Whisper beside the first answer of the day doubled its wait. A failure is logged; the first
        question reports it."""
        thread = threading.Thread(target=self._warm_up, args=(idle,), name="speech-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm_up(self, idle: Callable[[], bool]) -> None:
        noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)  # one second
        try:
            for options in (TranscribeOptions(language="en"), TranscribeOptions(language="en", vad=False)):
                _wait_until_quiet(idle, WARM_UP_QUIET_S, WARM_UP_PATIENCE_S)
                self.transcriber.transcribe(noise, options)  # the first: voice activity detection; the second: Whisper
        except AssistantError as error:
            log.warning("the speech model could not be loaded at start: %s", error)

    def transcribe(self, samples: np.ndarray, **overrides) -> Transcript:
        """Transcribe 16 kHz mono samples; `overrides`: language, translate, timestamps, language_hint."""
        return self.transcriber.transcribe(samples, transcribe_options(self.settings, **overrides))

    def transcribe_bytes(self, data: bytes, **overrides) -> Transcript:
        """Transcribe an uploaded recording (any common format); `overrides` as for `transcribe`."""
        return self.transcribe(self.decode_recording(data), **overrides)

    def transcribe_file(self, path: str | os.PathLike, **overrides) -> Transcript:
        """Transcribe a recording on disk (any common format); `overrides` as for `transcribe`."""
        return self.transcribe(self.read_recording(path), **overrides)

    def live_transcription(self, language_hint: str | None = None) -> LiveTranscription:
        """A recording to transcribe while it is being made (the browser's streamed microphone)."""
        return LiveTranscription(self._transcribe_piece, language_hint)

    def call_listener(self, language_hint: str | None = None) -> CallListener:
        """A voice call's microphone: turns ended by `call_silence_s` of silence, each transcribed,
        none longer than `max_audio_seconds`."""
        turns = TurnSettings(silence_s=self.settings.call_silence_s, max_seconds=self.settings.max_audio_seconds)
        return CallListener(self._transcribe_piece, turns, language_hint)

    def _transcribe_piece(self, samples: np.ndarray, language_hint: str | None) -> Transcript:
        """A piece of a live recording, in the language last spoken (LiveTranscription, CallListener)."""
        return self.transcribe(samples, language_hint=language_hint)

    def read_recording(self, path: str | os.PathLike) -> np.ndarray:
        """A recording on disk as 16 kHz mono samples, refused when over the settings' audio limits."""
        return read_audio_file(path, AudioLimits.from_settings(self.settings))

    def decode_recording(self, data: bytes) -> np.ndarray:
        """An uploaded recording as 16 kHz mono samples, refused when over the settings' audio limits."""
        return decode_audio(data, AudioLimits.from_settings(self.settings))

    # --- speaking

    @property
    def synthesizer(self) -> Synthesizer:
        """The voice, loaded on first use."""
        with self._lock:
            if self._synthesizer is None:
                self._synthesizer = load_synthesizer(self.settings.voice, self.settings.sentence_silence_s)
            return self._synthesizer

    def speak(self, text: str, speed: float | None = None) -> Speech:
        """Text (Markdown allowed) as speech; code, links and emoji are not read out."""
        spoken_text = speakable(text)
        if not spoken_text:
            raise SynthesisError("there is nothing to say: the text is empty once symbols and code are left out")
        return self.synthesizer.synthesize(spoken_text, speed or self.settings.speech_speed)

    def spoken(self, reply: Iterable[Event], speed: float | None = None) -> Iterator[Event]:
        """The reply's events with a SpeechChunk for each sentence as soon as it is spoken."""
        return spoken(reply, self.synthesizer, speed or self.settings.speech_speed)


def _wait_until_quiet(idle: Callable[[], bool], quiet_s: float, patience_s: float, poll_s: float = 0.1) -> bool:
    """Wait until `idle()` has held for `quiet_s` on end (True), or `patience_s` passed (False)."""
    deadline = time.monotonic() + patience_s
    quiet_since = time.monotonic() if idle() else None
    while quiet_since is None or time.monotonic() - quiet_since < quiet_s:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
        quiet_since = (quiet_since or time.monotonic()) if idle() else None
    return True
