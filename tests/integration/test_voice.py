"""Voice questions through the assistant core and the command line, with the real packaged Whisper
base and the tiny language model."""

import os
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import jiwer
import numpy as np
import pytest

from assistant.events import TextDelta
from assistant.speech import SpeechError
from speech_samples import needs_espeak, speak

pytestmark = needs_espeak

ASSISTANT = str(Path(sys.executable).parent / "assistant")
QUESTION = "How many people are standing on the beach?"


def words(text: str) -> str:
    return jiwer.RemovePunctuation()(text.lower()).replace("color", "colour").strip()


def write_silence(path: Path, seconds: float = 2.0) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(np.zeros(int(16000 * seconds), np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    return speak(QUESTION, tmp_path_factory.mktemp("voice") / "question.wav")


def test_a_voice_only_question_becomes_the_users_words_and_gets_an_answer(tiny_assistant, question_wav, photo_files):
    message = tiny_assistant.user_message("", [photo_files[0]], [question_wav])
    assert jiwer.wer(words(QUESTION), words(message.spoken_text)) <= 0.2, message.spoken_text
    assert message.text == message.spoken_text, "the transcript is the whole text of a voice-only message"
    assert len(message.images) == 1
    conversation = tiny_assistant.new_conversation().add(message)
    reply = tiny_assistant.reply(conversation, max_new_tokens=8, temperature=0.0)
    events = list(reply)
    assert any(isinstance(event, TextDelta) for event in events) and reply.usage.image_tokens > 0


def test_the_language_last_spoken_guides_the_next_recording(tiny_assistant, tmp_path):
    """A one-word question base may not take for English on its own (it varies between machines) is
    English in a conversation in English; the message remembers the language, for the next recording."""
    berlin = speak("Berlin.", tmp_path / "berlin.wav")
    in_english = tiny_assistant.user_message("", [], [berlin], language_hint="en")
    assert in_english.parts[0].language == "en" and in_english.spoken_text.isascii(), in_english.spoken_text


def test_the_app_loads_whisper_as_it_starts_not_at_the_first_question(make_settings, engine):
    from assistant.core import Assistant
    from assistant.ui import launch

    assistant = Assistant(make_settings(), engine)
    app = launch(assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        deadline = time.monotonic() + 120
        while not assistant.voice.transcriber_loaded and time.monotonic() < deadline:
            time.sleep(0.2)
        assert assistant.voice.transcriber_loaded, "nobody has spoken, but Whisper should be loaded already"
    finally:
        app.close()


def test_a_server_loads_whisper_beside_its_language_model_and_a_text_command_does_not(make_settings, monkeypatch):
    """Whisper's load reads its whole float16 model for a moment (+257 MiB, base): begun before the
    language model loads, that moment is not on top of all the app holds (it was the app's peak)."""
    from assistant import core

    order = []
    monkeypatch.setattr(
        core, "load_model", lambda settings, load=core.load_model: order.append("model") or load(settings)
    )
    monkeypatch.setattr(
        core.Voice,
        "load_in_background",
        lambda voice, load=core.Voice.load_in_background: order.append("speech") or load(voice),
    )
    serving = core.Assistant.from_settings(make_settings(), load_speech=True)
    assert order == ["speech", "model"]
    deadline = time.monotonic() + 120
    while not serving.voice.transcriber_loaded and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serving.voice.transcriber_loaded, "loaded with no warm-up and no question"

    asking = core.Assistant.from_settings(make_settings())  # `assistant ask "..."`: text only
    time.sleep(1.0)
    assert order == ["speech", "model", "model"] and not asking.voice.transcriber_loaded


def test_whisper_warms_up_only_once_the_assistant_has_stopped_answering(make_settings, monkeypatch):
    """On a small CPU, Whisper's warm-up beside the first answer of the day doubled that answer's wait."""
    from assistant import voice as voice_module

    monkeypatch.setattr(voice_module, "WARM_UP_QUIET_S", 0.5)
    answering = threading.Event()
    answering.set()
    voice = voice_module.Voice(make_settings())
    warming = voice.warm_up(idle=lambda: not answering.is_set())
    time.sleep(1.5)
    assert not voice.transcriber_loaded and warming.is_alive(), "it waits while an answer is being generated"
    answering.clear()
    warming.join(120)
    assert voice.transcriber_loaded and not warming.is_alive()


def test_text_and_voice_in_one_message_keep_both(tiny_assistant, question_wav):
    message = tiny_assistant.user_message("Answer in one word.", audio_paths=[question_wav])
    assert "beach" in words(message.spoken_text)
    assert message.text.endswith("Answer in one word.") and words(message.spoken_text) in words(message.text)


def test_a_silent_recording_is_no_speech_not_invented_words(tiny_assistant, tmp_path):
    silent = write_silence(tmp_path / "silence.wav")
    with pytest.raises(SpeechError, match="no speech detected"):
        tiny_assistant.user_message("", audio_paths=[silent])
    assert tiny_assistant.user_message("typed words stay", audio_paths=[silent]).text == "typed words stay"


def run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([ASSISTANT, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_transcribe_prints_the_transcript_and_timestamps(cache_dir, question_wav):
    plain = run("transcribe", str(question_wav), "--language", "en")
    assert plain.returncode == 0, plain.stderr
    assert jiwer.wer(words(QUESTION), words(plain.stdout)) <= 0.2, plain.stdout
    assert "language en" in plain.stderr
    timed = run("transcribe", str(question_wav), "--timestamps")
    assert timed.returncode == 0 and timed.stdout.startswith("[00:00"), timed.stdout
    assert "->" in timed.stdout and "beach" in timed.stdout.lower()


def test_cli_transcribe_refuses_a_bad_file_in_one_line(cache_dir, tmp_path):
    fake = tmp_path / "notes.wav"
    fake.write_text("these are my meeting notes, not audio")
    result = run("transcribe", str(fake))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: notes.wav: "), result.stderr


def test_cli_ask_with_audio_shows_what_was_heard_and_answers(cache_dir, tiny_model, question_wav):
    result = run("ask", "--profile", "tiny", "--audio", str(question_wav), "--max-new-tokens", "8", "--seed", "1")
    assert result.returncode == 0, result.stderr
    heard = next(line for line in result.stderr.splitlines() if line.startswith("you said: "))
    assert "beach" in heard.lower() and result.stdout.strip()


# --- the microphone, transcribed while the person speaks (speech.live) -------------------------------

FIRST, SECOND = "Is the cat sleeping on the sofa?", "What time does the museum open on Sunday?"


def microphone_chunks(samples: np.ndarray, rate: int = 48_000, chunk_s: float = 0.5):
    """16 kHz float samples as a browser's microphone sends them: int16 at 48 kHz, half a second at a time."""
    at_48k = np.repeat(samples, rate // 16_000)
    pcm = (np.clip(at_48k, -1, 1) * 32767).astype(np.int16)
    step = int(rate * chunk_s)
    return [pcm[i : i + step] for i in range(0, pcm.size, step)]


def test_a_live_recording_is_transcribed_as_it_is_made_and_only_the_last_piece_remains(tiny_assistant, tmp_path):
    from assistant.speech.audio import read_audio_file
    from assistant.speech.live import LiveTranscription

    pause = np.zeros(16_000, np.float32)  # a second between two sentences
    first, second = (read_audio_file(speak(text, tmp_path / f"{n}.wav")) for n, text in enumerate((FIRST, SECOND)))
    recording = np.concatenate([first, pause, second, pause[:4000]])
    transcribed: list[float] = []  # seconds of audio in each call to Whisper

    def transcribe(samples, hint):
        transcribed.append(samples.size / 16_000)
        return tiny_assistant.voice.transcribe(samples, language_hint=hint)

    live = LiveTranscription(transcribe)
    previews = [live.add(chunk, 48_000) for chunk in microphone_chunks(recording)]
    during = len(transcribed)
    heard = live.finish()

    assert jiwer.wer(words(f"{FIRST} {SECOND}"), words(heard.text)) <= 0.2, heard.text
    assert heard.language == "en" and heard.audio.size == pytest.approx(recording.size, abs=2000)
    assert any(words(FIRST) in words(preview) for preview in previews[:-2]), (
        "the first sentence shows while the person speaks"
    )
    assert during >= 3, "previews and the first piece were transcribed while recording"
    assert transcribed[during:] and all(
        seconds < (second.size + pause.size) / 16_000 + 0.5 for seconds in transcribed[during:]
    ), f"only the last sentence is left at the end, not the whole {recording.size / 16_000:.1f} s: {transcribed}"


def test_a_live_recording_of_silence_is_no_speech(tiny_assistant):
    live = tiny_assistant.voice.live_transcription()
    for chunk in microphone_chunks(np.zeros(3 * 16_000, np.float32)):
        live.add(chunk, 48_000)
    assert live.finish().text == ""


def test_a_live_recording_sent_from_the_chat_is_not_transcribed_again(tiny_assistant, tmp_path, monkeypatch):
    from assistant.speech.audio import read_audio_file
    from assistant.ui.handlers import ChatHandlers, Panel

    handlers = ChatHandlers(tiny_assistant, upload_folder=tmp_path)
    live = handlers.start_listening([])
    for chunk in microphone_chunks(read_audio_file(speak(FIRST, tmp_path / "first.wav"))):
        handlers.listen(live, chunk, 48_000)
    attached = handlers.stop_listening(live, {"text": "", "files": []}).input
    assert len(attached["files"]) == 1 and attached["files"][0].endswith(".wav")

    monkeypatch.setattr(tiny_assistant.voice, "transcribe", lambda *a, **k: pytest.fail("transcribed twice"))
    updates = list(handlers.send(attached, [], Panel(max_new_tokens=4, temperature=0.0)))
    spoken = [bubble for bubble in updates[-1].chat if bubble["kind"] == "spoken"]
    assert len(spoken) == 1 and words(FIRST) in words(spoken[0]["content"]) and spoken[0]["language"] == "en"
    assert updates[-1].chat[-1]["role"] == "assistant", "and it was answered"
