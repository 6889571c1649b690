"""A voice call's listening side (speech/call.py) with the real Whisper base and espeak-ng speech sent as
a browser sends it (48 kHz int16, 100-ms chunks): each question comes out once, transcribed, as its
closing silence passes; the assistant's own voice coming back through the speakers is not a
question, but a question using its words is; silence and noise cost no transcription."""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from assistant.core import Assistant
from assistant.settings import load_settings
from assistant.speech.audio import SAMPLE_RATE
from assistant.speech.call import ECHO_WINDOW_S, CallListener
from assistant.speech.transcriber import SpeechModelSpec, TranscribeOptions, load_transcriber
from assistant.speech.turns import TurnSettings
from assistant.ui.handlers import ChatHandlers, Panel
from assistant.voice import Voice
from speech_samples import encode, needs_espeak, needs_ffmpeg  # tests/ is on pytest's pythonpath

pytestmark = [needs_espeak, needs_ffmpeg]
normalise = EnglishTextNormalizer({"colour": "color"})
BROWSER_RATE = 48_000
REPLY = "The car in this photo is red, and it is parked beside a small white house."


@pytest.fixture(scope="module")
def whisper(cache_dir):
    return load_transcriber(SpeechModelSpec(model="base", cpu_threads=2, extra={"cache_dir": cache_dir}))


class Transcriptions:
    """Whisper base as the call's transcriber, counting its calls."""

    def __init__(self, whisper):
        self.whisper, self.calls = whisper, 0

    def __call__(self, samples, hint):
        self.calls += 1
        return self.whisper.transcribe(samples, TranscribeOptions(language="en"))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def as_the_browser_sends(audio: np.ndarray) -> list[np.ndarray]:
    """16 kHz float samples as a browser sends its microphone: 48 kHz int16, 100 ms at a time (resampled by ffmpeg)."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "16k.wav", Path(folder) / "48k.wav"
        with wave.open(str(source), "wb") as file:
            file.setnchannels(1), file.setsampwidth(2), file.setframerate(SAMPLE_RATE)
            file.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        encode(source, target, BROWSER_RATE, 1)
        with wave.open(str(target), "rb") as file:
            samples = np.frombuffer(file.readframes(file.getnframes()), dtype=np.int16)
    return [samples[start : start + BROWSER_RATE // 10] for start in range(0, len(samples), BROWSER_RATE // 10)]


def call_with(listener: CallListener, audio: np.ndarray) -> list[str]:
    return [turn.text for chunk in as_the_browser_sends(audio) for turn in listener.add(chunk, BROWSER_RATE)]


def test_each_question_comes_out_once_transcribed_as_the_same_speech_sent_whole(whisper, spoken):
    first, second = "What colour is the car in this photo?", "How far is the moon from the earth?"
    listener = CallListener(Transcriptions(whisper))
    heard = call_with(listener, np.concatenate([silence(1), spoken(first), silence(1.2), spoken(second), silence(1.2)]))
    sent_whole = [whisper.transcribe(spoken(text), TranscribeOptions(language="en")).text for text in (first, second)]
    assert [normalise(text) for text in heard] == [normalise(text) for text in sent_whole], "as `assistant transcribe`"
    assert listener.language == "en" and not listener.speaking


def test_the_assistants_own_voice_is_not_a_question_but_a_question_with_its_words_is(whisper, spoken):
    now = [0.0]
    listener = CallListener(Transcriptions(whisper), clock=lambda: now[0])
    listener.assistant_said(REPLY)
    assert call_with(listener, np.concatenate([silence(0.5), spoken(REPLY), silence(1.2)])) == [], "its echo"
    question = "Is the car red?"
    assert [normalise(text) for text in call_with(listener, np.concatenate([spoken(question), silence(1.2)]))] == [
        normalise(question)
    ]
    now[0] += ECHO_WINDOW_S + 1
    heard = call_with(listener, np.concatenate([spoken(REPLY), silence(1.2)]))
    assert len(heard) == 1, "said long after the assistant said it, it is the person's"


def test_silence_and_noise_cost_no_transcription(whisper):
    transcriptions = Transcriptions(whisper)
    listener = CallListener(transcriptions)
    hiss = np.random.default_rng(1).normal(0, 0.05, 20 * SAMPLE_RATE).astype(np.float32)
    assert call_with(listener, np.concatenate([silence(40), hiss])) == []
    assert transcriptions.calls == 0 and listener.hang_up() is None


def test_a_call_hung_up_mid_sentence_keeps_what_was_said(whisper, spoken):
    listener = CallListener(Transcriptions(whisper))
    question = "Tell me a short story about a dragon."
    assert call_with(listener, np.concatenate([silence(0.5), spoken(question)])) == []
    assert listener.speaking, "what barge-in reads: the person is talking"
    turn = listener.hang_up()
    assert turn is not None and normalise(turn.text) == normalise(question)


def test_the_apps_call_listener_takes_its_closing_silence_from_the_settings(spoken, cache_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    question = spoken("What is twelve plus seven?")
    audio = np.concatenate([silence(0.5), question, silence(1.0)])  # 1 s of silence after it, then more
    for silence_s, turns in ((0.6, 1), (1.5, 0)):
        voice = Voice(load_settings({"call_silence_s": silence_s, "speech_model": "base"}))
        assert len(call_with(voice.call_listener("en"), audio)) == turns
    with pytest.raises(ValueError, match="between 0.1 and 10"):
        TurnSettings(silence_s=20)


def test_in_a_call_what_the_answer_says_aloud_is_known_as_the_assistants_own_voice(make_settings, engine):
    handlers = ChatHandlers(Assistant(make_settings(max_new_tokens=40, temperature=0.0), engine))
    listener = handlers.start_call([])
    updates = list(handlers.send({"text": "Say something long.", "files": []}, [], Panel(speak=True), listener))
    assert any(update.speech is not None for update in updates), "the answer was spoken"
    answer = next(b["content"] for b in reversed(updates[-1].chat) if b["role"] == "assistant" and b["kind"] == "text")
    assert listener.is_echo(answer), f"heard back, the answer is no question: {answer!r}"
    assert not listener.is_echo("What is twelve plus seven?")
    typed = handlers.start_call([])
    list(handlers.send({"text": "Say something long.", "files": []}, [], Panel(speak=True)))
    assert not typed.is_echo(answer), "outside the call, nothing is told to it"
