"""Whisper through Hugging Face transformers: any Whisper checkpoint on the hub or in a local directory.

    spec.model: "openai/whisper-large-v3-turbo" (a hub id), "large-v3-turbo" (a size name, read as
                openai/whisper-<name>), or a local directory saved with save_pretrained
    spec.extra["batch_size"]: 30-s pieces decoded at once for audio over 30 s (default 8 on CUDA, 1 on CPU)

Why `model.generate` and not the `automatic-speech-recognition` pipeline: Whisper's own generate in
transformers already does everything the pipeline would be used for: audio over 30 s (OpenAI's
sequential algorithm: decode a window, seek to its last timestamp, go on), segment timestamps
(`return_segments`), language and task tokens, and the anti-hallucination rules (temperature
fallback when a window's mean log-probability or compression says it is garbage; windows whose
no-speech probability is high and log-probability low are skipped). The pipeline's own long-form
mode (`chunk_length_s`) merges overlapping 30-s chunks by their common tokens, which transformers
itself calls experimental for seq2seq models, and it reports neither the language probability nor
segments as data. So the pipeline would add a layer without adding anything this module needs.

Batching: on one long recording the sequential algorithm is inherently serial. On a GPU, audio over
30 s is instead cut into pieces of at most 30 s at the quietest moment near each boundary (so words
are rarely split) and the pieces are decoded `batch_size` at a time, each with the same fallback
and no-speech rules; the language is detected once, on the first 30 s, and used for every piece.

Silence: input whose RMS is below SILENCE_RMS (-60 dBFS) is "no speech" without running the model,
and a silent piece in batched mode is skipped; within audio that is not silent, Whisper's no-speech
logic decides. That energy gate is all the voice activity detection here (`TranscribeOptions.vad`
has nothing more to switch), and segments always carry Whisper's own timestamps (`.timestamps`
changes nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, WhisperForConditionalGeneration, WhisperProcessor

from ..devices import pick_device
from ..hub import is_path, unavailable_message
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

WINDOW_S = 30  # Whisper's encoder sees exactly 30 s
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE_HZ
WINDOW_FRAMES = 3000  # log-mel frames in 30 s (10 ms hop)
CUT_SEARCH_S = 5  # batched mode: look for the quietest cut point in the last 5 s of each 30-s piece
CUT_FRAME_SAMPLES = 320  # 20 ms energy frames when looking for a cut point
# OpenAI's decoding defaults. transformers computes the compression ratio on token ids, not on the
# text's bytes, so its threshold for the same repetitiveness is 1.35 instead of OpenAI's 2.4.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LOGPROB_THRESHOLD = -1.0  # mean log-probability per token below which a window is decoded again, hotter
NO_SPEECH_THRESHOLD = 0.6  # P(no speech) above which a low-probability window is skipped as silence
COMPRESSION_RATIO_THRESHOLD = 1.35
DEFAULT_GPU_BATCH = 8
SIZE_NAMES = (
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large", "large-v1", "large-v2", "large-v3", "large-v3-turbo",
)  # fmt: skip
MULTILINGUAL_VOCAB = 51865  # tokens in the smallest multilingual vocabulary; English-only ones have 51864
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# What to do when a hub model can't be had.
INSTEAD = (
    "Either give a local model directory, use the faster-whisper backend with the packaged model 'base', "
    "or download it once where there is network (`hf download {source}`) and then run with HF_HUB_OFFLINE=1."
)


class TransformersTranscriber:
    """A Whisper checkpoint loaded with transformers; see the module docstring for how it decodes."""

    backend = "transformers"

    def __init__(
        self, model: WhisperForConditionalGeneration, processor: WhisperProcessor, model_name: str, batch_size: int
    ):
        self.model = model
        self.processor = processor
        self.model_name = model_name
        self.batch_size = batch_size
        self.multilingual = _is_multilingual(model)
        self.lang_to_id: dict[str, int] = dict(getattr(model.generation_config, "lang_to_id", None) or {})

    @classmethod
    def load(cls, spec: SpeechModelSpec) -> TransformersTranscriber:
        """Load `spec.model` on `spec.device` (auto: CUDA when present) in fp16 on CUDA, fp32 on CPU."""
        device = pick_device(spec.device, error=SpeechError)
        dtype = _pick_dtype(spec.compute_type, device)
        if spec.cpu_threads > 0:
            torch.set_num_threads(spec.cpu_threads)  # process-wide: torch has one intra-op thread pool
        source = resolve_source(spec.model)
        model, processor = _load_pretrained(source, dtype)
        model.to(device).eval()
        _check_generation_config(model, source)
        return cls(model, processor, source, _batch_size(spec.extra, device))

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions = TranscribeOptions()) -> Transcript:
        """Transcribe float32 mono 16 kHz samples of any length (long audio is transcribed whole)."""
        audio = mono_samples(samples)
        duration = len(audio) / SAMPLE_RATE_HZ
        forced = self._forced_language(options.language)
        if is_silent(audio):
            return silent_transcript(duration, forced)
        language, probability = (forced, None) if forced else self._detect_language(audio)
        spans = self._spans(audio)
        pairs = []
        for first in range(0, len(spans), self.batch_size):
            pairs += self._decode(audio, spans[first : first + self.batch_size], language, options)
        text = "".join(raw for _, raw in pairs).strip()
        return Transcript(text, language, duration, tuple(segment for segment, _ in pairs), probability)

    def _spans(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """What to decode, as sample ranges: the whole recording (sequential long-form), or in
        batched mode its pieces of at most 30 s that are not silent."""
        if self.batch_size == 1 or len(audio) <= WINDOW_SAMPLES:
            return [(0, len(audio))]
        return [(start, end) for start, end in cut_points(audio) if not is_silent(audio[start:end])]

    def _forced_language(self, language: str | None) -> str | None:
        """The language to force, checked against the model; English-only models are always "en"."""
        if not self.multilingual:
            if language not in (None, "en"):
                raise SpeechError(
                    f"{self.model_name} is an English-only Whisper; it cannot transcribe language {language!r}"
                )
            return "en"
        if language is not None and f"<|{language}|>" not in self.lang_to_id:
            raise SpeechError(f"{self.model_name} does not know the language {language!r}")
        return language

    def _extract(self, pieces: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features (pieces, mel bins, frames at 100 per second of the longest piece), unpadded,
        and the frames' mask (pieces, frames): 1 where a piece has audio.

        Not padded to 30 s: generate pads each window itself, and knowing where the audio ends
        stops it from decoding the padding (which costs time and invites hallucinations).
        """
        device = self.model.device
        extracted = self.processor.feature_extractor(
            pieces,
            sampling_rate=SAMPLE_RATE_HZ,
            return_tensors="pt",
            return_attention_mask=True,
            truncation=False,
            padding="longest",
            device=str(device) if device.type == "cuda" else "cpu",  # the STFT runs on the GPU too
        )
        features = extracted.input_features.to(device=device, dtype=self.model.dtype)
        return features, extracted.attention_mask.to(device)

    def _detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """The most probable language of the first 30 s, and its probability.

        The same computation as `model.detect_language` (logits of the token after
        <|startoftranscript|>, restricted to language tokens), which returns only the argmax;
        a softmax over those logits also gives the probability, as OpenAI's Whisper reports it.
        """
        features, _ = self._extract([audio[:WINDOW_SAMPLES]])
        # The encoder takes exactly 30 s; pad the features with zeros as generate (and OpenAI) do.
        features = torch.nn.functional.pad(features, (0, WINDOW_FRAMES - features.shape[-1]))
        start = torch.full((1, 1), self.model.generation_config.decoder_start_token_id, device=self.model.device)
        with torch.inference_mode():
            logits = self.model(input_features=features, decoder_input_ids=start, use_cache=False).logits[0, -1]
        tokens = list(self.lang_to_id)
        probabilities = logits[list(self.lang_to_id.values())].float().softmax(-1)
        best = int(probabilities.argmax())
        return tokens[best].strip("<|>"), float(probabilities[best])

    def _decode(
        self, audio: np.ndarray, spans: list[tuple[int, int]], language: str, options: TranscribeOptions
    ) -> list[tuple[Segment, str]]:
        """Decode the sample ranges `spans` of `audio` as one batch.

        Returns (segment, raw text) pairs in time order, times in seconds from the start of `audio`;
        the raw text keeps Whisper's leading spaces, so that joining them spaces every language right.
        """
        features, mask = self._extract([audio[start:end] for start, end in spans])
        kwargs = {
            "attention_mask": mask,  # where each piece ends; also spares generate a warning about batches
            "return_timestamps": True,  # segments need them, and audio over 30 s cannot do without
            "return_segments": True,
            "num_beams": options.beam_size,
            "temperature": TEMPERATURES,
            "logprob_threshold": LOGPROB_THRESHOLD,
            "no_speech_threshold": NO_SPEECH_THRESHOLD,
            "compression_ratio_threshold": COMPRESSION_RATIO_THRESHOLD,
            # Not conditioning on the previous window's text: a hallucination cannot propagate.
            "condition_on_prev_tokens": False,
        }
        if self.multilingual:  # English-only checkpoints refuse language and task tokens
            kwargs.update(language=language, task=options.task)
        with torch.inference_mode():
            output = self.model.generate(features, **kwargs)
        pairs = []
        for raw_segments, (start, end) in zip(output["segments"], spans):
            span_s = (start / SAMPLE_RATE_HZ, end / SAMPLE_RATE_HZ)
            pairs.extend(self._segment(raw, *span_s) for raw in raw_segments)
        return [(segment, raw) for segment, raw in pairs if segment.text]

    def _segment(self, raw: dict, start_s: float, end_s: float) -> tuple[Segment, str]:
        """One of generate's segments (times relative to its span) as a Segment kept within the span."""
        text = self.processor.tokenizer.decode(raw["tokens"], skip_special_tokens=True)  # drops timestamps too
        start = min(max(float(raw["start"]) + start_s, start_s), end_s)
        end = min(max(float(raw["end"]) + start_s, start), end_s)
        return Segment(start, end, text.strip()), text


def cut_points(audio: np.ndarray) -> list[tuple[int, int]]:
    """Split `audio` into consecutive (start, end) sample ranges of at most 30 s each.

    Each cut is at the quietest 20-ms frame of the last CUT_SEARCH_S seconds before the 30-s
    limit, so that a cut falls in a pause rather than in a word when there is one, and as late
    as the quietest allows, so that there are as few pieces as possible.
    """
    ranges, start = [], 0
    while len(audio) - start > WINDOW_SAMPLES:
        search_from = start + WINDOW_SAMPLES - CUT_SEARCH_S * SAMPLE_RATE_HZ
        frames = audio[search_from : start + WINDOW_SAMPLES].reshape(-1, CUT_FRAME_SAMPLES)
        energy = np.square(frames).mean(axis=1)
        quietest = len(energy) - 1 - int(np.argmin(energy[::-1]))  # the latest of equals: longer pieces
        end = search_from + quietest * CUT_FRAME_SAMPLES + CUT_FRAME_SAMPLES // 2
        ranges.append((start, end))
        start = end
    ranges.append((start, len(audio)))
    return ranges


def resolve_source(model: str) -> str:
    """A size name (large-v3-turbo, turbo, base.en) -> its hub id; anything else is kept as given."""
    name = "large-v3-turbo" if model == "turbo" else model
    return f"openai/whisper-{name}" if name in SIZE_NAMES else model


def _pick_dtype(compute_type: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA (what Whisper was trained for), fp32 on CPU (fp16 matmuls there are slow or missing)."""
    if compute_type == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if compute_type not in DTYPES:
        raise SpeechError(
            f"speech compute type {compute_type!r} is not available with the transformers backend; "
            f"use auto, {', '.join(DTYPES)}"
        )
    return DTYPES[compute_type]


def _batch_size(extra: dict, device: torch.device) -> int:
    size = extra.get("batch_size", DEFAULT_GPU_BATCH if device.type == "cuda" else 1)
    if not isinstance(size, int) or size < 1:
        raise SpeechError(f"speech batch_size must be a whole number >= 1, got {size!r}")
    return size


def _load_pretrained(source: str, dtype: torch.dtype) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Model and processor from a hub id or a local directory; never runs code shipped with a model."""
    _check_local_path(source)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        if config.model_type != "whisper":
            raise SpeechError(f"{source} is not a Whisper model (it is a {config.model_type!r} model)")
        processor = WhisperProcessor.from_pretrained(source, trust_remote_code=False)
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype, trust_remote_code=False)
    except OSError as error:
        raise SpeechError(unavailable_message("speech model", source, error, INSTEAD.format(source=source))) from None
    except ValueError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpeechError(f"{source} could not be loaded as a Whisper model ({first_line})") from None
    return model, processor


def _check_local_path(source: str) -> None:
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpeechError(f"{source} is not a Whisper model directory (it has no config.json)")
    elif path.exists():
        raise SpeechError(f"{source} is a file; the transformers backend loads a model directory or hub id")
    elif is_path(source):
        raise SpeechError(f"Whisper model directory {source} does not exist")


def _is_multilingual(model: WhisperForConditionalGeneration) -> bool:
    """As the generation config says; without that field, as the vocabulary says (English-only: 51864 tokens)."""
    flag = getattr(model.generation_config, "is_multilingual", None)
    return bool(flag) if flag is not None else model.config.vocab_size >= MULTILINGUAL_VOCAB


def _check_generation_config(model: WhisperForConditionalGeneration, source: str) -> None:
    """Language, task and timestamps need fields that checkpoints saved before 2023 lack."""
    generation = model.generation_config
    needed = ["no_timestamps_token_id", "decoder_start_token_id"]
    if _is_multilingual(model):
        needed += ["lang_to_id", "task_to_id"]
    missing = [name for name in needed if getattr(generation, name, None) is None]
    if missing:
        raise SpeechError(
            f"{source} has an outdated generation_config.json (no {', '.join(missing)}); "
            f"copy generation_config.json from the openai/whisper checkpoint of the same size"
        )
