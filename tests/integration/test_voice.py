"""Voice questions through the assistant core and the command line, with the real packaged Whisper
base and the tiny language model."""

import os
import subprocess
import sys
import wave
from pathlib import Path

import jiwer
import numpy as np
import pytest

from assistant.engine import TextDelta
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
