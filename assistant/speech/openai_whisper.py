"""Whisper through OpenAI's own `openai-whisper` package (import name `whisper`).

    spec.model: a model name (tiny, base.en, large-v3-turbo, turbo; or openai/whisper-<name>),
                downloaded once into ~/.cache/whisper (spec.extra["download_root"] to change it),
                or a local .pt checkpoint {"dims": ..., "model_state_dict": ...}

`whisper.transcribe` does the rest as OpenAI wrote it: audio of any length (30-s windows, seeking to
the last timestamp), temperature fallback on low log-probability or repetitive text, and skipping
windows where the no-speech probability is high. Before it, input whose RMS is below SILENCE_RMS
(-60 dBFS) is "no speech" without running the model, and the language is detected here (on the
first 30 s, as whisper does) so that its probability can be reported. The energy gate is all the
voice activity detection here (`TranscribeOptions.vad` has nothing more to switch), and segments
always carry Whisper's own timestamps (`.timestamps` changes nothing).

Local checkpoints are always read with `torch.load(weights_only=True)`: tensors and plain
containers only, so a checkpoint cannot run code when it is loaded. (openai-whisper 20250625 passes
weights_only=True itself; older releases did not, so this module does not rely on it.)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import whisper
from whisper.audio import N_FRAMES, N_SAMPLES
from whisper.model import ModelDimensions, Whisper
from whisper.tokenizer import LANGUAGES

from ..devices import pick_device
from ..hub import is_path
from .audio import SAMPLE_RATE as SAMPLE_RATE_HZ
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

# OpenAI's transcribe() defaults, spelled out so that both torch backends visibly decode alike.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4  # gzip ratio of the text above which a window is decoded again, hotter
LOGPROB_THRESHOLD = -1.0  # mean log-probability per token below which a window is decoded again, hotter
NO_SPEECH_THRESHOLD = 0.6  # P(no speech) above which a low-probability window is skipped as silence
HUB_PREFIX = "openai/whisper-"  # the transformers backend's hub ids name the same models


class OpenAIWhisperTranscriber:
    """An openai-whisper model; `transcribe` runs `whisper.transcribe` on it."""

    backend = "openai-whisper"

    def __init__(self, model: Whisper, model_name: str, fp16: bool):
        self.model = model
        self.model_name = model_name
        self.fp16 = fp16

    @classmethod
    def load(cls, spec: SpeechModelSpec) -> OpenAIWhisperTranscriber:
        """Load `spec.model` on `spec.device` (auto: CUDA when present); fp16 only on CUDA."""
        device = pick_device(spec.device, error=SpeechError)
        fp16 = _pick_fp16(spec.compute_type, device)
        if spec.cpu_threads > 0:
            torch.set_num_threads(spec.cpu_threads)  # process-wide: torch has one intra-op thread pool
        model = _load_model(spec.model, device, spec.extra.get("download_root"))
        return cls(model.eval(), spec.model, fp16)

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions = TranscribeOptions()) -> Transcript:
        """Transcribe float32 mono 16 kHz samples of any length (long audio is transcribed whole)."""
        audio = mono_samples(samples)
        duration = len(audio) / SAMPLE_RATE_HZ
        forced = self._forced_language(options.language)
        if is_silent(audio):
            return silent_transcript(duration, forced)
        language, probability = (forced, None) if forced else self._detect_language(audio)
        result = whisper.transcribe(
            self.model,
            audio,
            verbose=None,  # no printing
            language=language,
            # An English-only model writes English whatever it is asked; it has no task tokens.
            task=options.task if self.model.is_multilingual else "transcribe",
            beam_size=options.beam_size if options.beam_size > 1 else None,  # None: greedy
            fp16=self.fp16,
            temperature=TEMPERATURES,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            logprob_threshold=LOGPROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            # Not conditioning on the previous window's text: a hallucination cannot propagate.
            condition_on_previous_text=False,
        )
        segments = tuple(_segment(raw, duration) for raw in result["segments"])
        return Transcript(result["text"].strip(), language, duration, tuple(s for s in segments if s.text), probability)

    def _forced_language(self, language: str | None) -> str | None:
        """The language to force, checked against the model; English-only models are always "en"."""
        if not self.model.is_multilingual:
            if language not in (None, "en"):
                raise SpeechError(
                    f"{self.model_name} is an English-only Whisper; it cannot transcribe language {language!r}"
                )
            return "en"
        known = list(LANGUAGES)[: self.model.num_languages]  # large-v3 added "yue" at the end
        if language is not None and language not in known:
            raise SpeechError(f"{self.model_name} does not know the language {language!r}")
        return language

    def _detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """The most probable language of the first 30 s, and its probability."""
        mel = whisper.log_mel_spectrogram(
            audio[:N_SAMPLES], n_mels=self.model.dims.n_mels, padding=N_SAMPLES, device=self.model.device
        )
        with torch.inference_mode():
            _, probabilities = self.model.detect_language(whisper.pad_or_trim(mel, N_FRAMES))
        language = max(probabilities, key=probabilities.get)
        return language, float(probabilities[language])


def _segment(raw: dict, duration: float) -> Segment:
    """A whisper segment dict as a Segment within [0, duration] seconds."""
    start = min(max(float(raw["start"]), 0.0), duration)
    return Segment(start, min(max(float(raw["end"]), start), duration), raw["text"].strip())


def _pick_fp16(compute_type: str, device: torch.device) -> bool:
    """auto: fp16 on CUDA, fp32 on CPU (openai-whisper has no fp16 CPU kernels worth using)."""
    if compute_type == "auto":
        return device.type == "cuda"
    if compute_type == "float16" and device.type != "cuda":
        raise SpeechError("speech compute type float16 needs a CUDA GPU with openai-whisper; use auto or float32")
    if compute_type not in ("float16", "float32"):
        raise SpeechError(
            f"speech compute type {compute_type!r} is not available with openai-whisper; use auto, float16 or float32"
        )
    return compute_type == "float16"


def _load_model(source: str, device: torch.device, download_root: str | None) -> Whisper:
    """A local .pt checkpoint, or a named model (downloaded once into whisper's cache)."""
    path = Path(source).expanduser()
    if path.is_file():
        return load_checkpoint(path).to(device)
    name = source.removeprefix(HUB_PREFIX)
    if name in whisper.available_models():
        return _load_named(name, device, download_root)
    if path.is_dir():
        raise SpeechError(
            f"{source} is a directory; openai-whisper loads a .pt checkpoint file "
            f"(a transformers model directory is loaded by the transformers speech backend)"
        )
    if is_path(source) or source.endswith(".pt"):
        raise SpeechError(f"Whisper checkpoint {source} does not exist")
    raise SpeechError(
        f"unknown openai-whisper model {source!r}; give a .pt checkpoint or one of: "
        f"{', '.join(whisper.available_models())}"
    )


def _load_named(name: str, device: torch.device, download_root: str | None) -> Whisper:
    """whisper.load_model: a download from OpenAI's CDN (SHA-256 checked), cached for next time."""
    try:
        return whisper.load_model(name, device=device, download_root=download_root)
    except OSError as error:  # URLError, a full disk, an unwritable cache
        where = download_root or "~/.cache/whisper"
        raise SpeechError(
            f"openai-whisper model {name!r} is not in {where} and could not be downloaded ({error}). "
            f"Download it once where there is network (it is cached in {where}), give a local .pt checkpoint, "
            f"or use the faster-whisper backend with the packaged model 'base'."
        ) from None
    except RuntimeError as error:  # the download did not match its SHA-256
        raise SpeechError(
            f"openai-whisper model {name!r} could not be downloaded intact ({error}); try again"
        ) from None


def load_checkpoint(path: Path) -> Whisper:
    """Build a Whisper from a checkpoint of tensors; a checkpoint holding other pickled objects is refused."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).splitlines()[0]
        raise SpeechError(
            f"{path} holds pickled Python objects besides tensors, and loading those can run arbitrary code, "
            f"so it was not loaded ({first_line}). Use a checkpoint saved as "
            f"{{'dims': dict, 'model_state_dict': tensors}}, as OpenAI's are."
        ) from None
    except (OSError, RuntimeError, EOFError) as error:
        raise SpeechError(f"{path} is not a readable PyTorch checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise SpeechError(f"{path} is not an openai-whisper checkpoint (it needs 'dims' and 'model_state_dict')")
    try:
        model = Whisper(ModelDimensions(**checkpoint["dims"]))
        model.load_state_dict(checkpoint["model_state_dict"])
    except (TypeError, RuntimeError) as error:
        first_line = str(error).splitlines()[0]
        raise SpeechError(f"{path} does not hold a Whisper model that fits its own dimensions ({first_line})") from None
    return model
