"""The remote backend against a real peer: instance A of this app serves the tiny model (a separate
process, as a server would be); instance B runs with --backend openai pointed at A."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from assistant.core import Assistant
from assistant.errors import ModelUnavailableError
from assistant.ui import launch

ASSISTANT = str(Path(sys.executable).parent / "assistant")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_a(cache_dir) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ASSISTANT_CACHE_DIR": str(cache_dir)}
    # A stands in for any OpenAI-compatible server: it answers at once, with no decode step to compile.
    process = subprocess.Popen(
        [ASSISTANT, "serve", "--profile", "tiny", "--compile-decode", "off", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, f"instance A did not start: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "instance A took too long to start"
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(10)


@pytest.fixture(scope="module")
def instance_a(cache_dir, tiny_model):  # tiny_model: built once, then A loads it from the cache
    process, base_url = start_a(cache_dir)
    yield base_url
    stop(process)


@pytest.fixture(scope="module")
def instance_b(make_settings, instance_a):
    assistant = Assistant.from_settings(
        make_settings(backend="openai", base_url=instance_a, remote_timeout_s=30, remote_retries=0)
    )
    app = launch(assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    yield assistant, f"{app.local_url}v1"
    app.close()
    assistant.close()


def ask(base_url: str, **options):
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
    return client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Tell me about boats."}], **options
    )


def test_b_answers_as_a_does_with_the_same_seed(instance_a, instance_b):
    assistant_b, b_url = instance_b
    assert assistant_b.model.details["backend"] == "openai" and instance_a in assistant_b.model.details["reason"]
    options = {"max_tokens": 12, "temperature": 1.0, "seed": 5}
    direct = ask(instance_a, **options).choices[0].message.content
    through_b = ask(b_url, **options).choices[0].message.content
    assert direct and through_b == direct, "the same request through B gives A's answer"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(b_url, stream=True, **options) if c.choices)
    assert streamed == direct, "streaming passes through B"


def test_b_sends_photos_and_transcribes_voice_locally(instance_b, photo_files):
    from assistant.ui.layout import EXAMPLES_FOLDER

    assistant_b, _ = instance_b
    conversation = assistant_b.new_conversation()
    conversation.add(assistant_b.user_message("", [photo_files[0]], [EXAMPLES_FOLDER / "question.wav"]))
    reply = assistant_b.reply(conversation, max_new_tokens=6, temperature=0.0)
    assert reply.text() is not None and reply.usage.completion_tokens == 6
    assert reply.usage.prompt_tokens > 50, "A counted the photo's image tokens in the prompt"
    assert "tallest mountain" in conversation.messages[0].spoken_text.lower()


def test_a_stopped_mid_stream_is_reported_and_b_stays_up(cache_dir, tiny_model, make_settings):
    process, a_url = start_a(cache_dir)
    assistant = Assistant.from_settings(
        make_settings(backend="openai", base_url=a_url, remote_timeout_s=10, remote_retries=0)
    )
    app = launch(assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    b_url = f"{app.local_url}v1"
    try:
        # Seeded: this reply runs 1,062 tokens. Unseeded, a reply can end within the 5 pieces read before
        # A is stopped (it did once in CI).
        stream = ask(b_url, stream=True, max_tokens=1500, temperature=1.0, seed=3)
        pieces = iter(stream)
        for _ in range(5):
            next(pieces)
        stop(process)  # A goes away in the middle of the reply
        with pytest.raises(openai.APIError, match="lost the connection to the model server|ended the reply"):
            for _ in pieces:
                pass
        assert httpx.get(f"{b_url}/models").status_code == 200, "B is still up"
        with pytest.raises(openai.APIStatusError) as caught:
            ask(b_url, max_tokens=4)
        assert caught.value.status_code == 502 and "is it running?" in caught.value.body["message"]
    finally:
        app.close()
        assistant.close()
        if process.poll() is None:
            stop(process)


def test_a_server_that_is_not_there_is_said_at_start(make_settings):
    with pytest.raises(ModelUnavailableError, match="cannot reach the model server at http://127.0.0.1:9/v1"):
        Assistant.from_settings(make_settings(backend="openai", base_url="http://127.0.0.1:9/v1", remote_retries=0))
