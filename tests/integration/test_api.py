"""The OpenAI-compatible API through the official `openai` client (and raw HTTP for malformed bodies),
against the app on loopback with the tiny model and the packaged Whisper base."""

import base64
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from assistant.conversation import Image
from assistant.core import Assistant
from assistant.engine import Engine
from assistant.ui import launch
from assistant.ui.layout import EXAMPLES_FOLDER

QUESTION_WAV = EXAMPLES_FOLDER / "question.wav"  # "What is the tallest mountain in the world?"
LIMITS = {"max_request_bytes": 3_000_000}


def serve(assistant):
    return launch(assistant, server_port=None, prevent_thread_lock=True, quiet=True)


@pytest.fixture(scope="module")
def api_assistant(make_settings, engine):
    return Assistant(make_settings(**LIMITS), engine)


@pytest.fixture(scope="module")
def base_url(api_assistant):
    app = serve(api_assistant)
    yield f"{app.local_url}v1"
    app.close()


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


@pytest.fixture
def asked(api_assistant, record_replies):
    """The conversations the model was asked to answer, in order."""
    return record_replies(api_assistant)


def data_url(path: Path, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(path.read_bytes()).decode()}"


def test_models_lists_the_served_model(client, api_assistant):
    assert [m.id for m in client.models.list().data] == [api_assistant.model.name]


def test_a_streamed_reply_is_the_whole_reply_in_pieces(client):
    question = [{"role": "user", "content": "Tell me about the sea."}]
    whole = client.chat.completions.create(model="any", messages=question, max_tokens=16, temperature=0, seed=1)
    chunks = list(
        client.chat.completions.create(
            model="any",
            messages=question,
            max_tokens=16,
            temperature=0,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].message.content, (
        "same seed: the stream adds up to the whole reply"
    )
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 16
    assert chunks[-1].usage.completion_tokens == 16, "include_usage sends the usage last"


def test_system_messages_options_and_stop_reach_the_core(client, asked):
    reply = client.chat.completions.create(
        model="any",
        max_completion_tokens=9,
        temperature=0.5,
        top_p=0.8,
        seed=4,
        stop=["\n\n", "###"],
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ],
    )
    conversation, options = asked[0], asked.options[0]
    assert conversation.system_prompt == "Be brief."
    assert [(m.role, m.text) for m in conversation.messages] == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "How are you?"),
    ]
    assert options == {"max_new_tokens": 9, "temperature": 0.5, "top_p": 0.8, "seed": 4, "stop": ("\n\n", "###")}
    assert reply.usage.completion_tokens <= 9


def test_an_image_part_and_an_audio_part_reach_the_model(client, asked, photo_files):
    reply = client.chat.completions.create(
        model="any",
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(photo_files[0], "image/png")}},
                    {
                        "type": "input_audio",
                        "input_audio": {"data": base64.b64encode(QUESTION_WAV.read_bytes()).decode(), "format": "wav"},
                    },
                ],
            }
        ],
    )
    message = asked[0].messages[0]
    assert len(message.images) == 1 and message.images[0].size == (64, 48)
    assert "tallest mountain" in message.spoken_text.lower(), message.spoken_text
    assert reply.usage.prompt_tokens > 20 and reply.choices[0].message.content is not None


def test_each_photo_keeps_the_detail_the_client_asks_for(client, asked, photo_files):
    photo = data_url(photo_files[0], "image/png")
    parts = [{"type": "image_url", "image_url": {"url": photo, "detail": detail}} for detail in ("low", "high")]
    parts.append({"type": "image_url", "image_url": {"url": photo}})  # not said: the settings' image_detail
    client.chat.completions.create(model="any", max_tokens=2, messages=[{"role": "user", "content": parts}])
    images = [part for part in asked[0].messages[0].parts if isinstance(part, Image)]
    assert [image.detail for image in images] == ["low", "high", "auto"]


@pytest.mark.parametrize("response_format", ["json", "text", "verbose_json", "srt", "vtt"])
def test_transcriptions_in_every_format(client, response_format):
    with QUESTION_WAV.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format=response_format, language="en"
        )
    text = result if isinstance(result, str) else result.text
    assert "tallest mountain" in text.lower(), text
    if response_format == "srt":
        assert text.startswith("1\n00:00:00,") and " --> " in text
    if response_format == "vtt":
        assert text.startswith("WEBVTT\n\n00:00:00.")
    if response_format == "verbose_json":
        assert result.language == "en" and result.duration > 1 and result.segments[0].end > result.segments[0].start


@pytest.mark.parametrize(
    "extra, param, words",
    [
        ({"n": 2}, "n", "only n=1"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tools"),
        ({"max_tokens": "many"}, "max_tokens", "valid integer"),
        ({"temperature": 9}, None, "temperature must be between"),
        ({"stop": ["a", "b", "c", "d", "e"]}, None, "at most 4"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}]},
            "messages.0.content.0.type",
            "not supported",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
                    }
                ]
            },
            "messages.0.content.0.image_url.url",
            "not valid base64",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}],
                    }
                ]
            },
            None,
            "not a supported image",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/a.png"}}],
                    }
                ]
            },
            "messages.0.content.0.image_url.url",
            "not fetched",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,", "detail": "max"}}],
                    }
                ]
            },
            "messages.0.content.0.image_url.detail",
            "must be one of low, auto, high",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "not supported"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages", "last message must be the user's"),
    ],
)
def test_bad_requests_are_400_with_a_useful_message(client, extra, param, words):
    body = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    error = caught.value.body
    assert words in error["message"], error
    assert error["type"] == "invalid_request_error" and (param is None or error["param"] == param), error


def test_malformed_bodies_and_oversized_payloads(base_url, client):
    for body in (b"{not json", b"[1, 2]", b'{"messages": "hi"}'):
        response = httpx.post(
            f"{base_url}/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400 and response.json()["error"]["message"], response.text
    huge = base64.b64encode(bytes(3_000_000)).decode()
    response = httpx.post(
        f"{base_url}/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{huge}"}}],
                }
            ]
        },
    )
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="too long for the model"):
        list(
            client.chat.completions.create(
                model="any", messages=[{"role": "user", "content": "word " * 5000}], max_tokens=2, stream=True
            )
        )
    assert client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "still up?"}], max_tokens=2
    ).choices, "the server keeps serving"


def test_an_api_key_is_required_when_set(make_settings, engine):
    app = serve(Assistant(make_settings(api_key="sk-local-test"), engine))
    base_url = f"{app.local_url}v1"
    try:
        missing = httpx.get(f"{base_url}/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError, match="API key"):
            openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
        assert openai.OpenAI(base_url=base_url, api_key="sk-local-test", max_retries=0).models.list().data
    finally:
        app.close()


def test_a_full_queue_is_503_with_retry_after_and_the_server_recovers(make_settings, tiny_model):
    engine = Engine(tiny_model, queue_size=1)
    app = serve(Assistant(make_settings(), engine))
    url = f"{app.local_url}v1/chat/completions"

    def ask(text: str) -> httpx.Response:
        return httpx.post(url, json={"messages": [{"role": "user", "content": text}], "max_tokens": 2}, timeout=120)

    answered: dict[str, httpx.Response] = {}

    def ask_aside(text: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: answered.setdefault(text, ask(text)))
        thread.start()
        return thread

    try:
        # The model held (as a reply would hold it, however long): the first request is taken and
        # waits for it, the second waits in the one-place queue, the third finds the queue full.
        with tiny_model.decoder.exclusively():
            running = ask_aside("talk")
            _wait_for(lambda: not engine.idle and engine.waiting == 0, "the first request was never taken")
            waiting = ask_aside("next")
            _wait_for(lambda: engine.waiting == 1, "the second request never reached the queue")
            refused = ask("and me?")
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        assert refused.json()["error"]["code"] == "server_busy"
        for thread in (running, waiting):
            thread.join(60)
        assert [answered[text].status_code for text in ("talk", "next")] == [200, 200], "the held ones are answered"
        assert ask("now?").status_code == 200
    finally:
        app.close()
        engine.close()


def _wait_for(condition, failure: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


def test_image_urls_when_enabled_refuse_private_addresses(make_settings, engine):
    app = serve(Assistant(make_settings(image_urls=True), engine))
    try:
        client = openai.OpenAI(base_url=f"{app.local_url}v1", api_key="x", max_retries=0)
        for url in ("http://127.0.0.1:1/cat.png", "http://10.0.0.1/cat.png", "ftp://example.com/cat.png"):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(
                    model="any",
                    max_tokens=2,
                    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
                )
            assert (
                "private or local address" in caught.value.body["message"]
                or "only http(s)" in caught.value.body["message"]
            ), caught.value.body
    finally:
        app.close()
