"""Conversations saved and read back: JSON with the photos inside (to import again) and Markdown
(to read). Any front end exports through here; imported files are untrusted, like any upload.

    {"format": "assistant-conversation", "version": 1, "system_prompt": "...",
     "messages": [{"role": "user", "parts": [{"type": "image", "name": "cat.jpg", "data": "<base64 PNG>"},
                                             {"type": "text", "text": "What is this?", "spoken": false}]},
                  {"role": "assistant", "parts": [{"type": "text", "text": "A cat."}]}]}
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import PIL.Image

from .conversation import Conversation, Image, Message, Text
from .errors import MediaError
from .media import ImageLimits, decode_image, too_big_message

FORMAT = "assistant-conversation"
VERSION = 1
MAX_EXPORT_BYTES = 200 * 1024 * 1024  # an imported file larger than this is refused before parsing


class HistoryError(MediaError):
    """An imported conversation that cannot be read; the message says where and why."""


def to_json(conversation: Conversation) -> str:
    """The whole conversation, photos included (as PNG, lossless), as a JSON document."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "system_prompt": conversation.system_prompt,
        "messages": [
            {"role": message.role, "parts": [_part_to_json(part) for part in message.parts]}
            for message in conversation.messages
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def to_markdown(conversation: Conversation) -> str:
    """A readable transcript; photos are embedded as data URLs so the file stands alone."""
    lines = []
    for message in conversation.messages:
        lines.append(f"**{'You' if message.role == 'user' else 'Assistant'}:**\n")
        for part in message.parts:
            if isinstance(part, Image):
                lines.append(f"![{_markdown_label(part.name)}](data:image/png;base64,{_png_base64(part.image)})\n")
            elif isinstance(part, Text):
                lines.append(f"{'🎤 ' if part.spoken else ''}{part.text}\n")
    return "\n".join(lines)


def from_json(data: bytes | str, limits: ImageLimits = ImageLimits()) -> Conversation:
    """Read a conversation written by `to_json`; every photo is checked like an upload."""
    if len(data) > MAX_EXPORT_BYTES:
        raise HistoryError(f"the conversation file is too big: {too_big_message(len(data), MAX_EXPORT_BYTES)}")
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HistoryError(f"this is not a conversation file (not valid JSON: {error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise HistoryError(f'this is not a conversation file exported by this assistant (no "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise HistoryError(
            f"conversation file version {document.get('version')!r} is not supported (this assistant reads {VERSION})"
        )
    messages = _field(document, "messages", list, "the file")
    conversation = Conversation(system_prompt=_optional_text(document, "system_prompt"))
    for index, message in enumerate(messages, start=1):
        conversation.add(_message_from_json(message, f"message {index}", limits))
    return conversation


def _part_to_json(part) -> dict[str, Any]:
    if isinstance(part, Image):
        return {"type": "image", "name": part.name, "data": _png_base64(part.image)}
    if isinstance(part, Text):
        return {"type": "text", "text": part.text, "spoken": part.spoken}
    raise ValueError("untranscribed audio cannot be exported; transcribe it first")


def _message_from_json(message: Any, where: str, limits: ImageLimits) -> Message:
    if not isinstance(message, dict):
        raise HistoryError(f"{where} is not an object")
    role = _field(message, "role", str, where)
    if role not in ("user", "assistant"):
        raise HistoryError(f"{where} has role {role!r}; a conversation holds only 'user' and 'assistant' messages")
    parts = [
        _part_from_json(part, f"{where}, part {index}", limits)
        for index, part in enumerate(_field(message, "parts", list, where), start=1)
    ]
    try:
        return Message(role, tuple(parts))
    except ValueError as error:
        raise HistoryError(f"{where}: {error}") from None


def _part_from_json(part: Any, where: str, limits: ImageLimits) -> Text | Image:
    if not isinstance(part, dict):
        raise HistoryError(f"{where} is not an object")
    kind = part.get("type")
    if kind == "text":
        return Text(_field(part, "text", str, where), spoken=bool(part.get("spoken", False)))
    if kind == "image":
        try:
            data = base64.b64decode(_field(part, "data", str, where), validate=True)
        except binascii.Error:
            raise HistoryError(f"{where}: the photo's data is not valid base64") from None
        try:
            return Image(decode_image(data, limits), name=_optional_text(part, "name"))
        except MediaError as error:
            raise HistoryError(f"{where}: {error}") from None
    raise HistoryError(f"{where} has type {kind!r}; the part types are 'text' and 'image'")


def _field(container: dict, name: str, kind: type, where: str):
    value = container.get(name)
    if not isinstance(value, kind):
        raise HistoryError(f"{where} needs {name!r} as a {kind.__name__} (got {type(value).__name__})")
    return value


def _optional_text(container: dict, name: str) -> str:
    value = container.get(name, "")
    if not isinstance(value, str):
        raise HistoryError(f"{name!r} must be a string")
    return value


def _png_base64(image: PIL.Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _markdown_label(name: str) -> str:
    return (name or "photo").replace("[", "(").replace("]", ")")
