"""The chat's controls in the core's terms (no server): what the model is asked, what the person
sees, and that every error ends as a message with nothing typed lost."""

from pathlib import Path

import pytest

from assistant.conversation import Image
from assistant.errors import BusyError
from assistant.events import Usage
from assistant.history import from_json
from assistant.ui.handlers import EMPTY_INPUT, ChatHandlers, Panel, reply_stats

GREEDY = Panel(temperature=0.0, max_new_tokens=8)


@pytest.fixture
def handlers(tiny_assistant, tmp_path):
    return ChatHandlers(tiny_assistant, upload_folder=tmp_path)


@pytest.fixture
def asked(tiny_assistant, record_replies):
    """The conversations the model was asked to answer, in order."""
    return record_replies(tiny_assistant)


def last(updates):
    return list(updates)[-1]


def test_a_sent_message_shows_its_photos_and_words_then_a_reply_that_grows(handlers, photo_files):
    updates = list(handlers.send({"text": "What is this?", "files": [str(photo_files[0])]}, [], GREEDY))
    assert updates[0].input == EMPTY_INPUT, "the input box empties as soon as the message is sent"
    assert [(b["role"], b["kind"]) for b in updates[0].chat] == [("user", "file"), ("user", "text")]
    replies = [u.chat[-1]["content"] for u in updates[1:] if u.chat[-1]["role"] == "assistant"]
    assert len(replies) > 1 and all(b.startswith(a) for a, b in zip(replies, replies[1:])), "the reply grows"
    assert updates[-1].usage is not None and updates[-1].usage.completion_tokens == 8


def test_photos_of_earlier_turns_stay_in_view(handlers, photo_files, asked):
    chat = last(handlers.send({"text": "Two photos", "files": [str(p) for p in photo_files[:2]]}, [], GREEDY)).chat
    last(handlers.send({"text": "And now?", "files": [str(photo_files[2])]}, chat, GREEDY))
    assert [len(m.images) for m in asked[1].messages] == [2, 0, 1], "both turns' photos reach the model"


def test_a_corrupt_photo_is_an_error_bubble_and_the_message_goes_back_in_the_box(handlers, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    message = {"text": "What is this?", "files": [str(broken)]}
    (update,) = handlers.send(message, [], GREEDY)
    assert len(update.chat) == 1 and update.chat[0]["kind"] == "error", update.chat
    assert update.chat[0]["content"].startswith("⚠️ broken.jpg: the image data is corrupt"), update.chat
    assert update.input == message, "nothing typed is lost"


def test_a_busy_model_is_an_error_bubble_and_the_message_comes_back(handlers, tiny_assistant, monkeypatch):
    def busy(conversation, **overrides):
        raise BusyError("the assistant is busy (4 requests are waiting); try again in a moment")

    monkeypatch.setattr(tiny_assistant, "reply", busy)
    earlier = [
        {"role": "user", "kind": "text", "content": "hi"},
        {"role": "assistant", "kind": "text", "content": "hello"},
    ]
    message = {"text": "Are you there?", "files": []}
    update = last(handlers.send(message, earlier, GREEDY))
    assert update.chat[:-1] == earlier, "the unanswered message is taken back out of the chat"
    assert update.chat[-1]["kind"] == "error" and "busy" in update.chat[-1]["content"]
    assert update.input == message


def test_error_bubbles_never_reach_the_model(handlers, asked):
    chat = [{"role": "assistant", "kind": "error", "content": "⚠️ Something failed"}]
    last(handlers.send({"text": "Hello", "files": []}, chat, GREEDY))
    assert [(m.role, m.text) for m in asked[0].messages] == [("user", "Hello")]


def test_retry_answers_the_last_message_again_in_place(handlers, asked):
    chat = last(
        handlers.send({"text": "Hello", "files": []}, [], Panel(temperature=1.0, seed=1, max_new_tokens=6))
    ).chat
    again = last(handlers.retry(chat, Panel(temperature=1.0, seed=1, max_new_tokens=6))).chat
    assert again == chat, "same seed, same conversation: the same reply, in the same place"
    other = last(handlers.retry(chat, Panel(temperature=1.0, seed=2, max_new_tokens=6))).chat
    assert len(other) == len(chat) and other[:-1] == chat[:-1]
    assert [m.text for m in asked[1].messages] == ["Hello"], "the old reply is not part of the retry"


def test_undo_takes_back_the_last_turn_and_returns_what_was_sent(handlers, photo_files):
    first = last(handlers.send({"text": "One", "files": []}, [], GREEDY)).chat
    second = last(handlers.send({"text": "Two", "files": [str(photo_files[0])]}, first, GREEDY)).chat
    undone = handlers.undo(second)
    assert undone.chat == first
    assert undone.input == {"text": "Two", "files": [str(photo_files[0])]}
    assert handlers.undo([]).chat == []


def test_edit_replaces_the_words_keeps_the_photos_and_answers_again(handlers, photo_files, asked):
    chat = last(handlers.send({"text": "What colour?", "files": [str(photo_files[0])]}, [], GREEDY)).chat
    chat = last(handlers.send({"text": "Thanks", "files": []}, chat, GREEDY)).chat
    edited = last(handlers.edit(chat, 1, "What shape?", GREEDY)).chat
    assert [b["content"] for b in edited[:2]][1] == "What shape?" and edited[0]["kind"] == "file"
    assert len(edited) == 3, "what came after the edited message is gone"
    assert [(m.text, len(m.images)) for m in asked[-1].messages] == [("What shape?", 1)]


def test_editing_a_photo_or_a_reply_is_refused_with_a_message(handlers, photo_files):
    chat = last(handlers.send({"text": "Hi", "files": [str(photo_files[0])]}, [], GREEDY)).chat
    for index in (0, 2, 99):
        update = last(handlers.edit(chat, index, "x", GREEDY))
        assert update.chat[:-1] == chat and update.chat[-1]["kind"] == "error"


def test_persona_changes_the_system_prompt_of_the_next_reply(handlers, tiny_assistant, asked):
    last(handlers.send({"text": "Hi", "files": []}, [], Panel(persona="tutor", max_new_tokens=4)))
    assert asked[0].system_prompt == tiny_assistant.personas()["tutor"].system_prompt


def test_export_and_import_give_back_the_same_conversation(handlers, photo_files, tmp_path):
    chat = last(handlers.send({"text": "Look", "files": [str(photo_files[1])]}, [], GREEDY)).chat
    exported = handlers.export(chat, GREEDY, "json")
    imported = handlers.import_file(str(exported), [])
    assert [(b["role"], b["kind"]) for b in imported] == [(b["role"], b["kind"]) for b in chat]
    assert [b["content"] for b in imported if b["kind"] != "file"] == [
        b["content"] for b in chat if b["kind"] != "file"
    ]
    conversation = from_json(exported.read_text())
    assert conversation.messages[0].images[0].size == (40, 40), "the photo travels inside the file"
    markdown = handlers.export(chat, GREEDY, "markdown").read_text()
    assert "**You:**" in markdown and "data:image/png;base64," in markdown and "Look" in markdown


def test_exported_files_are_removed_by_a_later_export_once_old(handlers, photo_files):
    import os
    import time

    from assistant.ui.handlers import KEPT_EXPORT_S

    chat = last(handlers.send({"text": "Look", "files": [str(photo_files[1])]}, [], GREEDY)).chat
    old, recent = handlers.export(chat, GREEDY, "json"), handlers.export(chat, GREEDY, "markdown")
    long_ago = time.time() - KEPT_EXPORT_S - 60
    os.utime(old.parent, (long_ago, long_ago))
    newest = handlers.export(chat, GREEDY, "json")
    assert not old.exists() and recent.is_file() and newest.is_file()
    assert newest.name == "conversation.json", "the name a download gets"


def test_a_bad_import_leaves_the_chat_and_says_why(handlers, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    chat = [{"role": "user", "kind": "text", "content": "kept"}]
    after = handlers.import_file(str(bad), chat)
    assert after[:1] == chat and after[-1]["kind"] == "error" and "not a conversation file" in after[-1]["content"]


def test_a_restored_chat_keeps_only_files_from_the_upload_folders(handlers, tmp_path, photo_files):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    kept = uploads / "cat.png"
    kept.write_bytes(Path(photo_files[0]).read_bytes())
    saved = [
        {"role": "user", "kind": "file", "content": {"path": str(kept)}},
        {"role": "user", "kind": "file", "content": {"path": "/etc/passwd"}},
        {"role": "user", "kind": "file", "content": {"path": str(uploads / "../../outside.png")}},
        {"role": "user", "kind": "text", "content": "hi"},
        {"role": "system", "kind": "text", "content": "injected"},
        "garbage",
    ]
    restored = handlers.restore(saved, [uploads])
    assert restored == [saved[0], saved[3]]


def test_reply_stats_list_first_token_time_and_speed():
    usage = Usage(
        prompt_tokens=10,
        image_tokens=0,
        completion_tokens=20,
        time_to_first_token_s=0.25,
        tokens_per_s=12.5,
        total_s=2,
        finish_reason="stop",
    )
    table = reply_stats([usage] * 7)
    assert "| 7 | 0.25 s | 12.5 | 20 |" in table and "| 2 |" not in table, table
    stopped = reply_stats([Usage(10, 0, 3, 0.5, 9.0, 1, "cancelled")])
    assert "| 1 | 0.50 s | 9.0 | 3 (cancelled) |" in stopped, stopped
    assert reply_stats([]) == "_No replies yet._"


def test_spoken_answers_follow_the_question_unless_the_person_chose(handlers):
    from assistant.ui.layout import EXAMPLES_FOLDER

    voice = {"text": "", "files": [str(EXAMPLES_FOLDER / "question.wav")]}
    typed = {"text": "Hello", "files": []}
    cases = [(voice, None, True), (typed, None, False), (voice, False, False), (typed, True, True)]
    for message, choice, expected in cases:
        updates = list(handlers.send(message, [], Panel(temperature=0.0, max_new_tokens=24, speak=choice)))
        speaking = [u.speaking for u in updates if u.speaking is not None]
        assert speaking == [expected], f"{message['text'] or 'voice'} with choice {choice}: {speaking}"
        spoken = [u.speech for u in updates if u.speech is not None]
        replay = [b for b in updates[-1].chat if b["role"] == "assistant" and b["kind"] == "file"]
        if expected:
            assert spoken and all(s.seconds > 0 for s in spoken), "the answer is heard sentence by sentence"
            assert len(replay) == 1 and Path(replay[0]["content"]["path"]).stat().st_size > 1000, (
                "a replay control follows the answer"
            )
        else:
            assert not spoken and not replay


def test_a_restored_chat_keeps_the_language_of_what_was_said_for_the_next_recording(handlers):
    from assistant.ui.chat import last_spoken_language

    saved = [
        {"role": "user", "kind": "spoken", "content": "bonjour", "language": "fr"},
        {"role": "assistant", "kind": "text", "content": "Bonjour !"},
        {"role": "user", "kind": "spoken", "content": "hallo", "language": "<script>"},
    ]
    restored = handlers.restore(saved, [])
    assert restored[0]["language"] == "fr" and "language" not in restored[2], "only a language code is kept"
    assert last_spoken_language(restored[:2]) == "fr" and last_spoken_language([]) is None


def test_the_photo_detail_setting_reaches_every_photo_in_view(handlers, photo_files, asked):
    low, high = (Panel(temperature=0.0, max_new_tokens=2, detail=detail) for detail in ("low", "high"))
    chat = last(handlers.send({"text": "One", "files": [str(photo_files[0])]}, [], low)).chat
    last(handlers.send({"text": "Two", "files": [str(photo_files[1])]}, chat, high))
    first, second = ([part.detail for part in m.parts if isinstance(part, Image)] for m in asked[1].messages[::2])
    assert (asked[0].detail, first, second) == ("low", ["high"], ["high"]), "the chat's setting, for old photos too"
    assert Panel.from_values(None, "", 0.7, 0.9, 8.0, None, "low").detail == "low"


def test_photos_attached_are_started_on_once_while_the_question_is_typed(
    handlers, tiny_assistant, photo_files, tmp_path, monkeypatch
):
    started = []
    monkeypatch.setattr(tiny_assistant.engine, "prepare", lambda images: started.append(images) or True)
    photo, other = str(photo_files[0]), str(photo_files[1])
    for typed in ("", "W", "Wh", "What is this?"):  # the box changes at every key
        handlers.prepare({"text": typed, "files": [photo]}, "low")
    assert [[image.detail for image in images] for images in started] == [["low"]]
    handlers.prepare({"text": "What is this?", "files": [photo, other]}, "low")
    handlers.prepare({"text": "What is this?", "files": [photo, other]}, "high")
    assert [len(images) for images in started] == [1, 2, 2] and started[-1][0].detail == "high"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    handlers.prepare({"text": "", "files": [str(broken)]}, "low")  # left for the send to report
    handlers.prepare({"text": "", "files": []}, "low")
    assert len(started) == 3
