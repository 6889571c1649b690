"""The browser chat (a first version: text, photos, streaming, stop). It only translates types:
Gradio's {"text", "files"} messages and history <-> the core's Message and Conversation."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from .core import Assistant
from .conversation import Message
from .engine import TextDelta, TurnsDropped
from .errors import AssistantError

TITLE = "Multimodal assistant"
DESCRIPTION = "Ask by text, attach photos (several at once if you like), and get a streamed answer."


def build_app(assistant: Assistant) -> gr.Blocks:
    def respond(message: dict, history: list[dict]) -> Iterator[str]:
        try:
            conversation = assistant.new_conversation()
            for earlier in history_to_messages(history, assistant):
                conversation.add(earlier)
            conversation.add(assistant.user_message(message.get("text", ""), message.get("files", [])))
            yield from _stream_text(assistant, conversation)
        except AssistantError as error:
            # Shown to the user as a message; the failed turn does not enter the history.
            raise gr.Error(str(error), print_exception=False) from None

    return gr.ChatInterface(
        respond,
        multimodal=True,
        textbox=gr.MultimodalTextbox(file_types=["image"], file_count="multiple", placeholder="Ask something…"),
        title=TITLE,
        description=f"{DESCRIPTION}\n\nModel: `{assistant.model.name}` ({assistant.model.details.get('reason', '')})",
        fill_height=True,
    )


def _stream_text(assistant: Assistant, conversation) -> Iterator[str]:
    shown = ""
    for event in assistant.reply(conversation):
        if isinstance(event, TurnsDropped):
            shown = f"_(Note: {event.message}.)_\n\n" + shown
        elif isinstance(event, TextDelta):
            shown += event.text
        else:
            continue
        yield shown


def history_to_messages(history: list[dict], assistant: Assistant) -> list[Message]:
    """Gradio history (one entry per text or file, consecutive entries of one role belong to one
    message) -> core messages, with the photos of earlier turns loaded again."""
    grouped: list[tuple[str, list[str], list[str]]] = []  # (role, texts, file paths)
    for entry in history:
        role = entry["role"]
        if not grouped or grouped[-1][0] != role:
            grouped.append((role, [], []))
        _collect(entry["content"], grouped[-1][1], grouped[-1][2])
    messages = []
    for role, texts, paths in grouped:
        text = "\n".join(texts)
        if role == "user":
            messages.append(assistant.user_message(text, paths))
        elif text:
            messages.append(Message.assistant(text))
    return messages


def _collect(content, texts: list[str], paths: list[str]) -> None:
    """Gradio has several shapes for message content: a string, a file dict, or a list of blocks."""
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, (list, tuple)):
        for block in content:
            _collect(block, texts, paths)
    elif isinstance(content, dict):
        if content.get("type") == "text":
            texts.append(content.get("text", ""))
        elif "path" in content:
            paths.append(content["path"])
        elif isinstance(content.get("file"), dict):
            paths.append(content["file"]["path"])
    elif hasattr(content, "path"):  # a FileData object
        paths.append(content.path)


def launch(assistant: Assistant) -> None:
    settings = assistant.settings
    app = build_app(assistant)
    app.queue(max_size=settings.queue_size, default_concurrency_limit=settings.queue_size)
    app.launch(server_name=settings.host, server_port=settings.port, max_file_size=settings.max_image_bytes)
