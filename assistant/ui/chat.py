"""The chat as the browser shows it <-> the core's messages.

A session's chat is a list of bubbles, JSON all the way down so that the browser can keep it across
a reload:

    {"role": "user", "kind": "file", "content": {"path": ".../cat.jpg"}}     a photo or a recording
    {"role": "user", "kind": "spoken", "content": "what is this?", "language": "en"}  a recording's transcript
    {"role": "user", "kind": "text", "content": "and the colour?"}           what was typed
    {"role": "assistant", "kind": "text", "content": "A cat."}
    {"role": "assistant", "kind": "error", "content": "⚠️ ..."}             shown, never sent to the model

Consecutive user bubbles are one user message. Recordings were transcribed when they were sent, so
the model reads their transcripts and the file is only there to be played back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..core import Assistant, Conversation, Detail, Image, Message, Text

Bubble = dict
AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".webm", ".aac", ".weba"})


def is_recording(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def split_files(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Uploaded files -> (photos, recordings), by the file's type as its name says."""
    paths = list(paths)
    return [p for p in paths if not is_recording(p)], [p for p in paths if is_recording(p)]


def user_bubbles(message: Message, photos: list[str], recordings: list[str]) -> list[Bubble]:
    """What the user sees of a message they sent: the files, then their words (typed or spoken)."""
    bubbles = [file_bubble("user", path) for path in [*photos, *recordings]]
    for part in message.parts:
        if isinstance(part, Text) and part.spoken:
            bubbles.append({"role": "user", "kind": "spoken", "content": part.text, "language": part.language})
        elif isinstance(part, Text):
            bubbles.append({"role": "user", "kind": "text", "content": part.text})
    return bubbles


def last_spoken_language(chat: list[Bubble]) -> str | None:
    """The language the person last spoke in this chat: Whisper's hint for their next recording."""
    spoken = [bubble.get("language") for bubble in chat if bubble["kind"] == "spoken"]
    return spoken[-1] if spoken else None


def file_bubble(role: str, path: str) -> Bubble:
    return {"role": role, "kind": "file", "content": {"path": str(path)}}


def error_bubble(reason: str) -> Bubble:
    return {"role": "assistant", "kind": "error", "content": f"⚠️ {reason.strip() or 'something went wrong'}"}


def for_display(chat: list[Bubble]) -> list[dict]:
    """The chat in Gradio's message format (only the keys Gradio knows)."""
    return [{"role": bubble["role"], "content": bubble["content"]} for bubble in chat]


def to_conversation(
    chat: list[Bubble], assistant: Assistant, persona: str | None, detail: Detail | None = None
) -> Conversation:
    """The conversation the model answers; photos of every earlier turn are read again, so they
    stay in view, at `detail` (default: the settings' image_detail)."""
    conversation = assistant.new_conversation(persona)
    for role, bubbles in _messages(chat):
        texts = [b["content"] for b in bubbles if b["kind"] in ("text", "spoken")]
        if role == "user":
            photos = [
                b["content"]["path"] for b in bubbles if b["kind"] == "file" and not is_recording(b["content"]["path"])
            ]
            conversation.add(assistant.user_message("\n".join(texts), photos, detail=detail))
        elif texts:
            conversation.add(Message.assistant("\n".join(texts)))
    return conversation


def from_conversation(conversation: Conversation, photo_folder: Path) -> list[Bubble]:
    """Bubbles for an imported conversation; its photos are written to `photo_folder`."""
    chat: list[Bubble] = []
    for number, message in enumerate(conversation.messages):
        for index, part in enumerate(message.parts):
            if isinstance(part, Image):
                path = photo_folder / f"{number}-{index}-{_safe_name(part.name)}.png"
                part.image.save(path)
                chat.append(file_bubble(message.role, str(path)))
            elif isinstance(part, Text):
                kind = "spoken" if part.spoken else "text"
                chat.append({"role": message.role, "kind": kind, "content": part.text})
    return chat


def last_user_message(chat: list[Bubble]) -> int | None:
    """Index of the first bubble of the last user message, or None when there is none."""
    starts = [
        i for i, bubble in enumerate(chat) if bubble["role"] == "user" and (i == 0 or chat[i - 1]["role"] != "user")
    ]
    return starts[-1] if starts else None


def end_of_message(chat: list[Bubble], index: int) -> int:
    """Index just past the message that holds bubble `index`."""
    end = index
    while end < len(chat) and chat[end]["role"] == chat[index]["role"]:
        end += 1
    return end


def as_input(bubbles: list[Bubble]) -> dict:
    """A sent message back in the input box: what was typed and every file (recordings are heard
    again when it is sent, so their transcripts are left out)."""
    typed = [b["content"] for b in bubbles if b["kind"] == "text"]
    files = [b["content"]["path"] for b in bubbles if b["kind"] == "file"]
    return {"text": "\n".join(typed), "files": files}


def _messages(chat: list[Bubble]) -> list[tuple[str, list[Bubble]]]:
    """Bubbles grouped into messages; error bubbles are left out (the model never sees them)."""
    grouped: list[tuple[str, list[Bubble]]] = []
    for bubble in chat:
        if bubble["kind"] == "error":
            continue
        if not grouped or grouped[-1][0] != bubble["role"]:
            grouped.append((bubble["role"], []))
        grouped[-1][1].append(bubble)
    return grouped


def _safe_name(name: str) -> str:
    stem = Path(name or "photo").stem
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40] or "photo"
