"""Spoken answers with the real piper voice, checked by ear: the packaged Whisper base transcribes
what the voice says."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import jiwer
import openai
import pytest

from assistant.events import SpeechChunk, TextDelta, Usage
from assistant.speech.synthesizer import encode_speech
from assistant.ui import launch

ASSISTANT = str(Path(sys.executable).parent / "assistant")
SENTENCES = (
    "The train to the city leaves at half past nine.",
    "Please bring a warm coat because it may rain.",
    "The museum is closed on Mondays.",
    "My sister plays the piano every evening.",
    "We bought fresh bread and cheese at the market.",
    "The cat is sleeping on the red sofa.",
    "Turn left at the bridge and walk along the river.",
    "The library has a large collection of old maps.",
    "Dinner will be ready very soon.",
    "The children built a sand castle on the beach.",  # Whisper writes it in two words: 2 errors a run otherwise
    "The garden is full of yellow flowers.",
)


def normalised(text: str) -> str:
    return jiwer.RemovePunctuation()(text.lower()).replace("-", " ").strip()


def heard(assistant, speech) -> str:
    wav, _ = encode_speech(speech, "wav")
    return assistant.voice.transcribe_bytes(wav, language="en").text


def test_spoken_sentences_come_back_word_for_word(tiny_assistant):
    said = [heard(tiny_assistant, tiny_assistant.voice.speak(sentence)) for sentence in SENTENCES]
    error = jiwer.wer([normalised(s) for s in SENTENCES], [normalised(h) for h in said])
    assert error <= 0.1, f"word error rate {error:.3f} over {len(SENTENCES)} sentences: {said}"


def test_markdown_code_links_and_emoji_are_never_read_out(tiny_assistant):
    reply = (
        "## Summary\n**Bold** advice: run `pip install` first 🎉.\n"
        "- See https://example.com/docs?page=2 for more.\n```python\nprint('x' * 3)\n```\nThat is all → done!"
    )
    text = heard(tiny_assistant, tiny_assistant.voice.speak(reply))
    for symbol in ("*", "#", "`", "http", "/", "?", "=", "🎉", "→", "print", "asterisk", "hash", "backtick"):
        assert symbol not in text.lower(), f"{symbol!r} was read out: {text!r}"
    assert "summary" in text.lower() and "install" in text.lower(), text


def scripted_reply(text: str):
    """A reply's events as the engine streams them, word by word."""
    for word in text.split(" "):
        yield TextDelta(word + " ")
    yield Usage(5, 0, len(text.split()), 0.1, 10.0, 1.0, "stop")


def test_the_first_sentence_is_spoken_before_the_last_one_is_written(tiny_assistant):
    heard_something = threading.Event()

    def reply_that_waits_before_its_last_sentence():
        # Like a model still thinking about its last sentence: it keeps the stream alive (empty
        # deltas) until sound arrives, or gives up after 30 s, when sound only came at the end.
        yield from list(scripted_reply(" ".join(SENTENCES[:3])))[:-1]
        deadline = time.monotonic() + 30
        while not heard_something.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
            yield TextDelta("")
        yield from scripted_reply(SENTENCES[3])

    events = []
    for event in tiny_assistant.voice.spoken(reply_that_waits_before_its_last_sentence()):
        events.append(event)
        if isinstance(event, SpeechChunk):
            heard_something.set()
    kinds = [
        "speech" if isinstance(e, SpeechChunk) else "text"
        for e in events
        if not isinstance(e, Usage) and getattr(e, "text", "x")
    ]
    first_speech, last_text = kinds.index("speech"), len(kinds) - 1 - kinds[::-1].index("text")
    assert first_speech < last_text, f"sound must start while the reply is still streaming: {kinds}"
    spoken = [e.text for e in events if isinstance(e, SpeechChunk)]
    assert spoken == list(SENTENCES[:4]), "each sentence is spoken once, in order"


def test_closing_a_spoken_reply_silences_the_rest(tiny_assistant):
    events = tiny_assistant.voice.spoken(scripted_reply(" ".join(SENTENCES)))
    for event in events:
        if isinstance(event, SpeechChunk):
            break
    events.close()  # Stop
    assert list(events) == [], "nothing more is said after Stop"


@pytest.fixture(scope="module")
def speech_client(make_settings, engine):
    from assistant.core import Assistant

    app = launch(
        Assistant(make_settings(max_speech_chars=300), engine), server_port=None, prevent_thread_lock=True, quiet=True
    )
    yield openai.OpenAI(base_url=f"{app.local_url}v1", api_key="none", max_retries=0)
    app.close()


@pytest.mark.parametrize("response_format", ["wav", "mp3", "flac", "opus"])
def test_the_speech_route_speaks_in_every_format(speech_client, tiny_assistant, response_format):
    audio = speech_client.audio.speech.create(
        model="tts-1", voice="alloy", input=SENTENCES[3], response_format=response_format
    )
    text = tiny_assistant.voice.transcribe_bytes(audio.content, language="en").text
    assert jiwer.wer(normalised(SENTENCES[3]), normalised(text)) <= 0.1, text


def test_pcm_is_raw_16_bit_samples(speech_client):
    audio = speech_client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there.", response_format="pcm", speed=1.5
    )
    assert len(audio.content) % 2 == 0 and 22050 * 2 * 0.3 < len(audio.content) < 22050 * 2 * 3


@pytest.mark.parametrize(
    "request_fields, words",
    [
        ({"input": "   "}, "input is empty"),
        ({"input": "word " * 100}, "the limit is 300"),
        ({"input": "Hi.", "response_format": "aiff"}, "response_format 'aiff' is not supported"),
        ({"input": "Hi.", "voice": "darth"}, "unknown voice 'darth'"),
        ({"input": "Hi.", "speed": 9}, "speed must be between"),
    ],
)
def test_speech_requests_it_cannot_do_are_400(speech_client, request_fields, words):
    fields = {"model": "tts-1", "voice": "alloy", **request_fields}
    with pytest.raises(openai.BadRequestError, match=words):
        speech_client.audio.speech.create(**fields)


def test_say_writes_an_audio_file(tmp_path, tiny_assistant):
    out = tmp_path / "hello.flac"
    result = subprocess.run(
        [ASSISTANT, "say", "Good morning, how are you?", "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "good morning" in tiny_assistant.voice.transcribe_bytes(out.read_bytes(), language="en").text.lower()
    wrong = subprocess.run(
        [ASSISTANT, "say", "Hi", "-o", str(tmp_path / "hello.txt")], capture_output=True, text=True, timeout=120
    )
    assert wrong.returncode == 1 and "must end in .wav, .mp3, .flac or .opus" in wrong.stderr


def test_ask_speak_writes_the_answer_as_speech(built_tiny, tmp_path):
    out = tmp_path / "answer.wav"
    result = subprocess.run(
        [
            ASSISTANT,
            "ask",
            "--profile",
            "tiny",
            "--seed",
            "3",
            "--max-new-tokens",
            "30",
            "--speak",
            str(out),
            "Tell me a story.",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the answer is printed as well"
    assert "s of speech to" in result.stderr and out.stat().st_size > 10_000, result.stderr


@pytest.fixture(scope="module")
def built_tiny(cache_dir, tiny_model):
    """The tiny model is built once by the session fixtures; the subprocess reuses the cache."""
    return cache_dir
