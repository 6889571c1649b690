"""The browser chat's events through a loopback launch and gradio_client, the way the page calls
them: send with photos and voice, stop, retry, undo, edit, clear, persona, export/import, errors,
several people at once, and the password when asked for."""

import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from assistant.core import Assistant
from assistant.ui import launch
from assistant.ui.layout import EXAMPLES_FOLDER

PANEL = ("default", 0.0, 0.9, 12, None)  # persona, temperature, top-p, max new tokens, seed
LIMITS = {"max_image_bytes": 100_000, "max_audio_bytes": 2_000_000}  # uploads over 2 MB never reach the core


@pytest.fixture(scope="module")
def ui_assistant(make_settings, engine):
    return Assistant(make_settings(**LIMITS), engine)


@pytest.fixture(scope="module")
def url(ui_assistant):
    app = launch(ui_assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    assert app.local_url.startswith("http://127.0.0.1:"), "the chat listens on loopback"
    yield app.local_url
    app.close()


@pytest.fixture
def asked(ui_assistant, record_replies):
    """The conversations the model was asked to answer, in order."""
    return record_replies(ui_assistant)


def connect(url, **kwargs):
    return Client(url, verbose=False, **kwargs)


def shown(chatbot) -> list[tuple[str, str]]:
    """(role, text or 'file') for each bubble of the chatbot as the client receives it."""
    out = []
    for message in chatbot:
        for block in message["content"]:
            out.append((message["role"], block["text"] if block["type"] == "text" else "file"))
    return out


def send(client, text, files=(), panel=PANEL):
    """(chatbot, input box, stats) after the reply (the spoken-answer outputs are left out)."""
    return client.predict({"text": text, "files": [handle_file(str(f)) for f in files]}, *panel, api_name="/send")[:3]


def test_the_answer_streams_and_photos_of_earlier_turns_stay(url, photo_files, asked):
    client = connect(url)
    job = client.submit(
        {"text": "What is in these photos?", "files": [handle_file(str(p)) for p in photo_files[:2]]},
        *PANEL,
        api_name="/send",
    )
    updates = [shown(chatbot) for chatbot, *_ in job]
    replies = [bubbles[-1][1] for bubbles in updates if bubbles and bubbles[-1][0] == "assistant"]
    assert len(replies) > 2 and all(b.startswith(a) for a, b in zip(replies, replies[1:])), (
        "the reply grows as it streams"
    )
    assert updates[-1][:3] == [("user", "file"), ("user", "file"), ("user", "What is in these photos?")]
    chatbot, box, stats = send(client, "Which one is brighter?")
    assert shown(chatbot)[-2] == ("user", "Which one is brighter?")
    assert [(m.role, len(m.images)) for m in asked[1].messages] == [("user", 2), ("assistant", 0), ("user", 0)], (
        "the second turn must carry the first turn's two photos"
    )
    assert "| 2 |" in stats and "tok/s" in stats, "each reply's speed is listed in the side panel"


def test_a_voice_message_shows_its_transcript_as_the_users_words(url, asked):
    chatbot, _, _ = send(connect(url), "", [EXAMPLES_FOLDER / "question.wav"])
    (audio, words) = shown(chatbot)[:2]
    assert audio == ("user", "file") and words[0] == "user"
    assert "tallest mountain" in words[1].lower(), f"the transcript is the user's words, got {words[1]!r}"
    assert asked[0].messages[0].text == words[1], "the model reads the same transcript"


def test_retry_undo_edit_and_clear(url, asked):
    client = connect(url)
    seeded = ("default", 1.0, 0.9, 8, 7)
    first, _, _ = send(client, "Hello", panel=seeded)
    retried, *_ = client.predict(*seeded, api_name="/retry")
    assert shown(retried) == shown(first), "same seed: the retried reply is the same, in the same place"
    assert [m.text for m in asked[1].messages] == ["Hello"], "the old reply is not part of the retry"

    send(client, "Second question")
    chatbot, box = client.predict(api_name="/undo")
    assert shown(chatbot) == shown(first) and typed(box)["text"] == "Second question", "undo hands the message back"

    edited, *_ = client.predict(0, "Hello again", *PANEL, api_name="/edit")
    assert shown(edited)[0] == ("user", "Hello again") and len(shown(edited)) == 2
    assert [m.text for m in asked[-1].messages] == ["Hello again"]

    cleared = client.predict(api_name="/clear")
    assert cleared[0] == [] and "No replies yet" in cleared[1]
    send(client, "Fresh start")
    assert [m.text for m in asked[-1].messages] == ["Fresh start"], "nothing of the cleared chat reaches the model"


def test_the_persona_chosen_in_the_panel_is_the_system_prompt(url, ui_assistant, asked):
    send(connect(url), "Explain rain", panel=("tutor", 0.0, 0.9, 4, None))
    assert asked[0].system_prompt == ui_assistant.personas()["tutor"].system_prompt


def test_errors_are_messages_in_the_chat_and_the_input_comes_back(url, tmp_path):
    client = connect(url)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"RIFF....WAVEfmt definitely not audio")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(150_000))
    for file, reason in (
        (broken, "broken.jpg: the image data is corrupt"),
        (noise, "noise.wav"),
        (big, "big.png: the file is"),
    ):
        chatbot, box, _ = send(client, "What is this?", [file])
        assert shown(chatbot)[-1][0] == "assistant" and shown(chatbot)[-1][1].startswith(f"⚠️ {reason}"), shown(chatbot)[
            -1
        ]
        assert typed(box)["text"] == "What is this?" and len(typed(box)["files"]) == 1, "nothing typed is lost"
    # A model error (a reply longer than the model's context) is a message too.
    chatbot, box, _ = send(client, "Write forever", panel=("default", 0.0, 0.9, 4096, None))
    assert "max_new_tokens=4096" in shown(chatbot)[-1][1] and typed(box)["text"] == "Write forever"
    chatbot, _, _ = send(client, "Still there?")
    assert shown(chatbot)[-2] == ("user", "Still there?") and shown(chatbot)[-1][0] == "assistant", "the chat goes on"


def test_uploads_over_the_limit_are_refused_before_the_core(url, tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(bytes(3_000_000))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        send(connect(url), "What is this?", [huge])


def test_stop_ends_one_reply_at_once_and_leaves_the_other_persons_reply(url, ui_assistant):
    long = ("default", 1.0, 0.9, 1500, 3)
    stopper, other = connect(url), connect(url)
    stopped = stopper.submit({"text": "Talk a lot", "files": []}, *long, api_name="/send")
    _wait_for_updates(stopped, 3)
    kept = other.submit({"text": "Talk a bit", "files": []}, "default", 1.0, 0.9, 40, 3, api_name="/send")
    stopped.cancel()
    chatbot, _, stats, *_ = kept.result(timeout=120)
    assert "| 1 |" in stats and "(length)" in stats, "the other person's reply ran to its end"
    deadline = time.monotonic() + 20
    while not ui_assistant.engine.idle and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ui_assistant.engine.idle, "the stopped reply no longer occupies the model"
    chatbot, _, _ = send(stopper, "Short one now")
    assert shown(chatbot)[-2] == ("user", "Short one now"), "the chat stays usable after Stop"


def test_each_session_has_its_own_chat(url, asked):
    ann, bob = connect(url), connect(url)
    send(ann, "I am Ann")
    send(bob, "I am Bob")
    send(ann, "Who am I?")
    assert [m.text for m in asked[-1].messages if m.role == "user"] == ["I am Ann", "Who am I?"]


def test_export_then_import_restores_the_conversation(url, photo_files, tmp_path):
    client = connect(url)
    chatbot, _, _ = send(client, "Keep this photo", [photo_files[0]])
    exported = downloaded(client.predict("default", api_name="/export_json"))
    markdown = Path(downloaded(client.predict("default", api_name="/export_markdown"))).read_text()
    assert "Keep this photo" in markdown and "data:image/png;base64," in markdown
    fresh = connect(url)
    imported = fresh.predict(handle_file(exported), api_name="/import_json")
    assert shown(imported) == shown(chatbot), "the imported chat is the exported one, photo included"


def test_a_password_is_asked_when_one_is_set(make_settings, engine):
    assistant = Assistant(make_settings(auth="ann:secret"), engine)
    app = launch(assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        with pytest.raises(Exception):
            connect(app.local_url).predict(api_name="/clear")
        assert connect(app.local_url, auth=("ann", "secret")).predict(api_name="/clear")[0] == []
    finally:
        app.close()


def typed(box) -> dict:
    """The input box's value, whether it came as a value or as an update of the component."""
    return box.get("value", box) if isinstance(box, dict) and "__type__" in box else box


def downloaded(output) -> str:
    """The path of a file output (the download box is also made visible, so it comes as an update)."""
    return output["value"] if isinstance(output, dict) else output


def _wait_for_updates(job, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(job.outputs()) < count:
        assert time.monotonic() < deadline, "the reply never started streaming"
        time.sleep(0.05)


def test_the_api_answers_as_soon_as_the_port_opens(ui_assistant, monkeypatch):
    """A client that comes the moment the server listens finds the API there (it once got a 404)."""
    import gradio
    import httpx

    original_launch = gradio.Blocks.launch
    statuses = []

    def launch_then_ask(blocks, *args, **kwargs):
        launched = original_launch(blocks, *args, **kwargs)
        statuses.append(httpx.get(f"{blocks.local_url.rstrip('/')}/v1/models", timeout=10).status_code)
        return launched

    monkeypatch.setattr(gradio.Blocks, "launch", launch_then_ask)
    app = launch(ui_assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    app.close()
    assert statuses == [200]


def test_nothing_is_sent_to_gradios_servers(ui_assistant, monkeypatch):
    """Gradio's telemetry is on unless an app turns it off: a launch would report itself (and check for
    a newer version) over the network."""
    from gradio import analytics

    reported = []
    monkeypatch.setattr(analytics, "_do_analytics_request", lambda topic, data: reported.append(topic))
    monkeypatch.setattr(analytics, "version_check", lambda: reported.append("version check"))
    app = launch(ui_assistant, server_port=None, prevent_thread_lock=True, quiet=True)
    app.close()
    assert reported == [] and app.analytics_enabled is False
