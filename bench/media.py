"""Image encoding time per vision encoder, and speech real-time factor per backend."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from PIL import Image

from assistant.models.configs import SIGLIP_SO400M_384

from .common import repeat


@dataclass
class EncoderResult:
    encoder: str
    image_px: int
    milliseconds: float  # median of the timed runs, preprocessing included


def starter_encoder(photo: Image.Image, runs: int) -> EncoderResult:
    from assistant.vision.encoders import load_vision_encoder

    encoder = load_vision_encoder("efficientnet-lite0", device=torch.device("cpu"), dtype=torch.float32)

    def encode():
        with torch.inference_mode():
            encoder.features(encoder.preprocess([photo]))

    return EncoderResult("EfficientNet-Lite0 (starter)", 224, 1000 * statistics.median(repeat(encode, runs, warm_up=1)))


def hub_encoder(runs: int, device: torch.device) -> EncoderResult:
    """The `cpu` profile's vision tower at its real size, random weights, one 384-px tile."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    tower = SiglipVisionModel(SiglipVisionConfig(**SIGLIP_SO400M_384)).eval().to(device)
    pixels = torch.randn(1, 3, 384, 384, device=device)

    def encode():
        with torch.inference_mode():
            tower(pixel_values=pixels)
        if device.type == "cuda":
            torch.cuda.synchronize()

    milliseconds = 1000 * statistics.median(repeat(encode, runs, warm_up=1))
    return EncoderResult("SigLIP so400m/14 (LLaVA-OneVision, random), one tile", 384, milliseconds)


@dataclass
class SpeechResult:
    runtime: str
    audio_s: float
    seconds: float
    word_error_rate: float

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_s


def speech_backends(threads: int, seconds: float = 30.0) -> list[SpeechResult]:
    """bench/speech.py's backends on the same Whisper base weights (one timed run each)."""
    from tools import whisper_convert

    from . import speech as speech_bench
    from . import tts

    ct2_dir = whisper_convert.default_ct2_dir()
    hf_dir, pt_file = whisper_convert.write_both(ct2_dir, whisper_convert.default_work_dir())
    audio = speech_bench.Audio(*tts.speech_with_pauses(seconds, speech_bench.PAUSE_S))
    normalize, _ = speech_bench.normalizer()
    results = speech_bench.measure(speech_bench.cases(ct2_dir, hf_dir, pt_file, threads), audio.samples, runs=1)
    return [
        SpeechResult(
            f"Whisper base, {r.case.label} {r.case.compute}",
            audio.seconds,
            r.median_s,
            speech_bench.word_error_rate(audio.text, r.text, normalize),
        )
        for r in results
        if not r.error
    ]


def spoken_answer(threads: int) -> SpeechResult:
    """The piper voice: seconds to synthesise a reply of a few sentences."""
    from assistant.speech.synthesizer import load_synthesizer

    from . import speech_out

    synthesizer = load_synthesizer()
    speech_out._limit_threads(synthesizer, threads)
    synthesizer.synthesize("Warming up.")
    row = speech_out.measure(synthesizer, speech_out.REPLIES[0], runs=1)
    return SpeechResult("piper voice (spoken answers)", row["audio_s"], row["whole_s"], float("nan"))
