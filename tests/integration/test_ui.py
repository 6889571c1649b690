"""The first browser chat through a loopback launch and gradio_client: streaming, photos kept across
turns, errors as messages."""

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from assistant.ui import build_app


@pytest.fixture(scope="module")
def client(tiny_assistant):
    app = build_app(tiny_assistant)
    app.queue()
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    assert url.startswith("http://127.0.0.1:"), "the chat listens on loopback"
    yield lambda: Client(url, verbose=False)
    app.close()


def test_the_answer_streams_and_photos_of_earlier_turns_stay(client, photo_files, tiny_assistant, monkeypatch):
    seen = []  # what the core was asked to answer, turn by turn
    original_reply = tiny_assistant.reply

    def recording_reply(conversation, **overrides):
        seen.append([(m.role, m.text, len(m.images)) for m in conversation.messages])
        return original_reply(conversation, **overrides)

    monkeypatch.setattr(tiny_assistant, "reply", recording_reply)
    chat = client()
    job = chat.submit({"text": "What is in these photos?", "files": [handle_file(str(p)) for p in photo_files[:2]]}, api_name="/respond")
    updates = list(job)
    assert len(updates) > 1, "the reply should arrive in several updates"
    assert all(later.startswith(earlier) for earlier, later in zip(updates, updates[1:])), "each update extends the last"
    assert updates[-1] == job.result() and updates[-1]
    # The second turn has no photo of its own; the model must still see the first turn's two photos.
    second = chat.predict({"text": "Which one is brighter?", "files": []}, api_name="/respond")
    assert second
    assert seen[0] == [("user", "What is in these photos?", 2)]
    assert seen[1] == [("user", "What is in these photos?", 2), ("assistant", updates[-1], 0), ("user", "Which one is brighter?", 0)], (
        "the second turn must carry the first turn's photos and reply"
    )


def test_a_bad_photo_is_an_error_message_and_the_chat_goes_on(client, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    chat = client()
    with pytest.raises(AppError, match="broken.jpg: the image data is corrupt"):
        chat.predict({"text": "What is this?", "files": [handle_file(str(bad))]}, api_name="/respond")
    assert chat.predict({"text": "Hello?", "files": []}, api_name="/respond"), "the chat still answers after an error"
