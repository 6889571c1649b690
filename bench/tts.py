"""Spoken benchmark audio made on the spot: espeak-ng says the text, faster-whisper's decoder resamples it.

espeak-ng writes 22.05 kHz mono WAV; `faster_whisper.decode_audio` (PyAV) gives the 16 kHz float32
mono samples in [-1, 1] that every Whisper backend expects.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # Hz, what Whisper expects
VOICE = "en-us"
WORDS_PER_MINUTE = 150  # a calm speaking rate, close to espeak-ng's default of 175 but easier to follow

# Questions a user would ask the assistant, each a sentence of its own.
QUESTIONS = (
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
    "Where did I leave my keys yesterday?",
    "Can you translate this menu into English?",
)


def speak(text: str, voice: str = VOICE, words_per_minute: int = WORDS_PER_MINUTE) -> np.ndarray:
    """`text` spoken by espeak-ng: float32 samples, shape [n], 16 kHz mono."""
    from faster_whisper import decode_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        command = ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text]
        subprocess.run(command, check=True, capture_output=True)
        return decode_audio(str(wav), sampling_rate=SAMPLE_RATE)


def speech_with_pauses(min_seconds: float, pause_s: float) -> tuple[np.ndarray, str]:
    """QUESTIONS spoken one after another, `pause_s` of silence between them, until at least
    `min_seconds` of audio (cycling through them if needed): (float32 samples [n] at 16 kHz, the text)."""
    pause = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
    pieces, texts, seconds = [], [], 0.0
    while seconds < min_seconds:
        question = QUESTIONS[len(texts) % len(QUESTIONS)]
        samples = speak(question)
        pieces += [samples, pause]
        texts.append(question)
        seconds += (len(samples) + len(pause)) / SAMPLE_RATE
    return np.concatenate(pieces[:-1]), " ".join(texts)  # no trailing pause
