"""Spoken test audio made at test time: espeak-ng says a phrase, ffmpeg re-encodes it.

Both come from Debian (`apt-get install espeak-ng ffmpeg`, done by .ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)"
)

# Questions a user would ask the assistant: about photos, the weather, arithmetic, everyday things.
PHRASES = (
    "What colour is the car in this photo?",
    "How many people are standing on the beach?",
    "Will it rain in London tomorrow?",
    "What is the weather like this weekend?",
    "What is twelve plus seven?",
    "Can you describe the picture I just sent?",
    "Is the cat sleeping on the sofa?",
    "Please read the text on this sign.",
    "What time does the museum open on Sunday?",
    "Which of these two photos is brighter?",
    "How far is the moon from the earth?",
    "Tell me a short story about a dragon.",
)


def speak(text: str, path: Path, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Write `text` spoken by espeak-ng to a 22.05 kHz mono WAV file at `path`."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True, capture_output=True
    )
    return path


def encode(source: Path, target: Path, sample_rate: int, channels: int, extra: tuple[str, ...] = ()) -> Path:
    """Re-encode `source` with ffmpeg; the codec follows `target`'s extension unless `extra` says."""
    command = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-ar",
        str(sample_rate),
        "-ac",
        str(channels),
        *extra,
        str(target),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return target
