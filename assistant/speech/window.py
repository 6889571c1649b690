"""Short clips on a short encoder window: the faster-whisper path for voice questions.

Whisper's encoder reads a fixed 30-s window (3000 feature frames), padding a 3-s question with 27 s
of silence, and its cost follows the window, not the speech. CTranslate2's encoder takes a shorter
window, so a clip whose speech fits gets `ShortWindow.frames_for(speech)` frames: the speech plus a
margin, never below a floor. The floor and margin come from the sweeps of `python -m
bench.whisper_window` over 1-5 s questions in several voices and speeds (bench/results/whisper_window.md):
down to the 6-s floor the word error rate stayed at the 30-s window's while the time fell to about a
third. What remains is mostly the decoder, so a short clip is decoded greedily by default
(`speech_short_beam_size`), for a few more word errors than beam 5 on the 30-s window
(bench/results/whisper_window_greedy.md; through the HTTP API: bench/results/whisper_api.md).
Its known failure: on ~3 s of speech the 6-s window now and then makes Whisper write the sentence
twice (piper's "The library has a large collection of old maps.", no silence around it; none on the
30-s window: bench/results/whisper_window_said_twice.md). A longer floor moved the problem elsewhere
(looped recordings dropped as "no speech"), so the window checks its own result instead: a transcript
that starts over, word for word (`repeats_itself`), is made again on the 30-s window, which keeps a
repetition that was really said and writes a doubled one once. That costs a 30-s decode only then
(bench/results/whisper_window_said_twice_checked.md: no take doubled, the median time unchanged).

Everything after the encoder is faster-whisper's own: its decoding with temperature fallback,
timestamps, word alignment and the no-speech and compression checks (`generate_segments`, given our
encoder output for the window). The language is detected on that same encoder output, a single
decoder step, where `WhisperModel.transcribe` would encode another full 30-s window for it.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens, restore_speech_timestamps
from faster_whisper.vad import collect_chunks

from .audio import SAMPLE_RATE

FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s; 100 feature frames a second
FRAMES_PER_SECOND = 100
# A different language than the session's last one is taken only when detection is this sure of it
# (measured on short clips: a real switch, French after English, 0.91; a wrong guess, English for
# espeak German, 0.54);
# short questions are where detection wavers (one word can sound Welsh), and people rarely switch.
LANGUAGE_SWITCH_PROBABILITY = 0.7
# Telephone-band audio (recorded at 8 kHz: nothing above 4 kHz) loses words on a short window, where
# the 30-s one gets them ("what time turns the new Liam open on Sunday?" at 10 and 12 s of window, right
# at 15 s and 30 s), so it keeps the full window. Measured share of energy above 4.2 kHz in espeak-ng
# phrases: 7e-10 to 2.5e-5 from 8-kHz wav and mp3, 2e-3 to 1.3e-2 from 16 to 48 kHz sources.
NARROWBAND_ABOVE_HZ = 4200
NARROWBAND_ENERGY_SHARE = 1e-4


@dataclass(frozen=True)
class ShortWindow:
    """How the encoder window follows a clip: speech + margin, at least the floor (feature frames)."""

    floor_frames: int = 600
    margin_frames: int = 200

    def frames_for(self, speech_frames: int) -> int | None:
        """The window for `speech_frames` of speech, or None when only the full 30 s fits."""
        frames = max(self.floor_frames, speech_frames + self.margin_frames)
        return frames if frames < FULL_WINDOW_FRAMES else None


@dataclass(frozen=True)
class WindowTranscript:
    segments: list  # faster-whisper Segments, times in the original audio's seconds
    language: str
    language_probability: float | None  # None when the language was given


def is_narrowband(samples: np.ndarray) -> bool:
    """Whether 16 kHz `samples` carry (almost) nothing above NARROWBAND_ABOVE_HZ: telephone-band audio."""
    power = np.abs(np.fft.rfft(samples)) ** 2
    total = float(power.sum())
    high = float(power[np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE) > NARROWBAND_ABOVE_HZ].sum())
    return total > 0 and high / total < NARROWBAND_ENERGY_SHARE


def speech_only(audio: np.ndarray, speech_chunks: list[dict]) -> np.ndarray:
    """The stretches VAD found speech in, joined (as faster-whisper's own vad_filter does)."""
    pieces, _ = collect_chunks(audio, speech_chunks, SAMPLE_RATE)
    return np.concatenate(pieces)


def transcribe_window(
    model: WhisperModel,
    speech: np.ndarray,
    window_frames: int,
    arguments: dict,
    language_hint: str | None = None,
    speech_chunks: list[dict] | None = None,
) -> WindowTranscript:
    """Transcribe `speech` (16 kHz mono, fitting the window) with the encoder on `window_frames`.

    `arguments` are those WhisperModel.transcribe takes (the full path's), so both paths decode
    alike; `speech_chunks` (VAD's, when `speech` is their joined audio) map times back."""
    features = model.feature_extractor(speech)
    encoder_output = model.encode(pad_or_trim(features, window_frames))
    language, probability = _language(model, encoder_output, arguments.get("language"), language_hint)
    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task=arguments.get("task", "transcribe"), language=language
    )
    options = transcription_options(arguments, tokenizer)
    segments = model.generate_segments(features, tokenizer, options, False, encoder_output)
    if speech_chunks:
        segments = restore_speech_timestamps(segments, speech_chunks, SAMPLE_RATE)
    return WindowTranscript(list(segments), language, probability)


def _language(model: WhisperModel, encoder_output, forced: str | None, hint: str | None) -> tuple[str, float | None]:
    """The forced language, else the one detected on this window (see choose_language)."""
    if forced:
        return forced, None
    if not model.model.is_multilingual:
        return "en", 1.0
    ranked = [(token[2:-2], probability) for token, probability in model.model.detect_language(encoder_output)[0]]
    return choose_language(ranked, hint)


def choose_language(ranked: list[tuple[str, float]], hint: str | None) -> tuple[str, float]:
    """The most likely language of `ranked` ((code, probability), best first), except that the hint
    (the language last heard) stays unless another is at least LANGUAGE_SWITCH_PROBABILITY likely."""
    best, best_probability = ranked[0]
    if hint and best != hint and best_probability < LANGUAGE_SWITCH_PROBABILITY:
        return hint, dict(ranked).get(hint, 0.0)
    return best, best_probability


REPEAT_MIN_WORDS = 3  # a phrase this long, said twice back to back, is what the short window's loop writes


def repeats_itself(text: str) -> bool:
    """Whether `text` starts over, word for word, case and punctuation aside: a phrase followed by itself
    again, whole or cut short, with at least REPEAT_MIN_WORDS words in the phrase and in the repeat
    ("The old maps are here. The old maps are here." or "... The old maps"). "Help! Help!" is too short."""
    words = [word.strip(".,!?;:\"'").lower() for word in text.split()]
    return any(
        words[period:] == words[: len(words) - period]
        for period in range(REPEAT_MIN_WORDS, len(words) - REPEAT_MIN_WORDS + 1)
    )


# WhisperModel.transcribe's keyword -> the TranscriptionOptions field it fills, where the names differ.
RENAMED = {"temperature": "temperatures"}


@functools.cache
def _transcribe_defaults() -> dict:
    """WhisperModel.transcribe's keyword defaults, read once (not for every clip)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(WhisperModel.transcribe).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def transcription_options(arguments: dict, tokenizer: Tokenizer) -> TranscriptionOptions:
    """The options WhisperModel.transcribe would build from `arguments`: its own defaults (read from
    its signature, so a faster-whisper upgrade keeps them) with `arguments` on top."""
    given = {**_transcribe_defaults(), **arguments}
    values = {RENAMED.get(name, name): value for name, value in given.items()}
    temperature = values["temperatures"]
    values["temperatures"] = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature]
    if values["suppress_tokens"]:
        values["suppress_tokens"] = get_suppressed_tokens(tokenizer, values["suppress_tokens"])
    return TranscriptionOptions(**{field.name: values[field.name] for field in fields(TranscriptionOptions)})
