"""POST /v1/chat/completions: OpenAI's messages (text, image_url and input_audio parts) into a
conversation, and the reply back, whole or streamed as server-sent events ending with [DONE]."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..core import DETAILS, Assistant, Conversation, Message, Reply
from ..errors import AssistantError
from ..events import Event, TextDelta, Usage
from .errors import ApiError, parse_json

UNSUPPORTED = {  # request fields this server cannot honour, and why
    "tools": "tools (function calling) are not supported",
    "tool_choice": "tools (function calling) are not supported",
    "functions": "functions are not supported",
    "function_call": "functions are not supported",
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "audio": "audio output is not supported by chat completions here",
    "prediction": "predicted outputs are not supported",
}


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that this server reads."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None


def parse_chat(body: bytes) -> ChatRequest:
    chat = parse_json(body, ChatRequest)
    _refuse_unsupported(chat, chat.model_dump())
    return chat


def _refuse_unsupported(chat: ChatRequest, document: dict) -> None:
    for name, reason in UNSUPPORTED.items():
        if document.get(name) not in (None, False, [], {}):
            raise ApiError(400, reason, param=name, code="unsupported_parameter")
    if chat.n not in (None, 1):
        raise ApiError(400, "only n=1 is supported (one choice per request)", param="n", code="unsupported_parameter")
    if chat.response_format and chat.response_format.get("type") not in (None, "text"):
        raise ApiError(400, "only text responses are supported", param="response_format", code="unsupported_parameter")
    if chat.modalities and set(chat.modalities) - {"text"}:
        raise ApiError(400, "only text output is supported", param="modalities", code="unsupported_parameter")
    if not chat.messages:
        raise ApiError(400, "messages must hold at least one message", param="messages")


def conversation_and_options(assistant: Assistant, chat: ChatRequest) -> tuple[Conversation, dict]:
    reader = _MessageReader(assistant)
    conversation = None
    system = []
    for index, message in enumerate(chat.messages):
        role = message.get("role")
        where = f"messages.{index}"
        if role in ("system", "developer"):
            system.append(reader.text_only(message.get("content"), where))
        elif role == "user":
            conversation = conversation or assistant.new_conversation()
            conversation.add(reader.user(message.get("content"), where))
        elif role == "assistant":
            conversation = conversation or assistant.new_conversation()
            if text := reader.text_only(message.get("content"), where):
                conversation.add(Message.assistant(text))
        else:
            raise ApiError(
                400,
                f"{where}.role {role!r} is not supported; use system, developer, user or assistant",
                param=f"{where}.role",
            )
    if conversation is None or not conversation.messages or conversation.messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    if system:
        conversation.system_prompt = "\n\n".join(system)
    stop = (chat.stop,) if isinstance(chat.stop, str) else tuple(chat.stop or ())
    options = {
        "max_new_tokens": chat.max_completion_tokens or chat.max_tokens,
        "temperature": chat.temperature,
        "top_p": chat.top_p,
        "seed": chat.seed,
        "stop": stop or None,
    }
    return conversation, options


class _MessageReader:
    """OpenAI message content (a string or a list of parts) -> core messages."""

    def __init__(self, assistant: Assistant):
        self.assistant = assistant

    def text_only(self, content, where: str) -> str:
        if content is None or isinstance(content, str):
            return content or ""
        parts = self._parts(content, where)
        for index, part in enumerate(parts):
            if part.get("type") != "text":
                raise ApiError(
                    400,
                    f"{where}.content.{index}: only text parts are allowed here",
                    param=f"{where}.content.{index}.type",
                )
        return "\n".join(part.get("text", "") for part in parts)

    def user(self, content, where: str):
        if isinstance(content, str):
            return self.assistant.user_message_from_bytes(content)
        texts, images, details, recordings = [], [], [], []
        for index, part in enumerate(self._parts(content, where)):
            at = f"{where}.content.{index}"
            kind = part.get("type")
            if kind == "text":
                texts.append(_field(part, "text", str, at))
            elif kind == "image_url":
                details.append(_detail(part, at))  # checked first: nothing is fetched or decoded for a bad request
                images.append(self._image(part, at))
            elif kind == "input_audio":
                recordings.append(self._audio(part, at))
            else:
                raise ApiError(
                    400,
                    f"{at}.type {kind!r} is not supported; the part types are text, image_url and input_audio",
                    param=f"{at}.type",
                )
        return self.assistant.user_message_from_bytes("\n".join(texts), images, recordings, details)

    def _parts(self, content, where: str) -> list[dict]:
        if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
            raise ApiError(400, f"{where}.content must be a string or a list of parts", param=f"{where}.content")
        return content

    def _image(self, part: dict, at: str) -> bytes:
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str):
            raise ApiError(400, f"{at}.image_url.url must be a string", param=f"{at}.image_url.url")
        if url.startswith("data:"):
            return _data_url_bytes(url, f"{at}.image_url.url")
        if not self.assistant.settings.image_urls:
            raise ApiError(
                400,
                "image URLs are not fetched by this server; send the image as a data URL (data:image/png;base64,...)",
                param=f"{at}.image_url.url",
                code="image_urls_disabled",
            )
        return self.assistant.fetch_image(url)

    def _audio(self, part: dict, at: str) -> bytes:
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise ApiError(400, f"{at}.input_audio must be an object with data and format", param=f"{at}.input_audio")
        return _base64(_field(audio, "data", str, f"{at}.input_audio"), f"{at}.input_audio.data")


def _detail(part: dict, at: str) -> str | None:
    """OpenAI's `image_url.detail`: low, high or auto; None when the client does not say."""
    image_url = part.get("image_url")
    detail = image_url.get("detail") if isinstance(image_url, dict) else None
    if detail is not None and detail not in DETAILS:
        raise ApiError(
            400, f"{at}.image_url.detail must be one of {', '.join(DETAILS)}", param=f"{at}.image_url.detail"
        )
    return detail


def _field(container: dict, name: str, kind: type, at: str):
    value = container.get(name)
    if not isinstance(value, kind):
        raise ApiError(400, f"{at}.{name} must be a {kind.__name__}", param=f"{at}.{name}")
    return value


def _data_url_bytes(url: str, param: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ApiError(400, "a data URL must look like data:image/png;base64,<data>", param=param)
    return _base64(payload, param)


def _base64(payload: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the data is not valid base64", param=param) from None


def whole(reply: Reply, model: str) -> JSONResponse:
    text = reply.text()
    usage = reply.usage
    body = _completion_base("chat.completion", model) | {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": _finish(usage)}],
        "usage": _usage(usage),
    }
    return JSONResponse(body)


def stream(first: Event, rest: Iterator[Event], model: str, include_usage: bool) -> StreamingResponse:
    base = _completion_base("chat.completion.chunk", model)

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return _event(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} | extra)

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            for event in itertools.chain([first], rest):
                match event:
                    case TextDelta(text=text):
                        yield chunk({"content": text})
                    case Usage():
                        yield chunk({}, _finish(event))
                        if include_usage:
                            yield _event(base | {"choices": [], "usage": _usage(event)})
        except AssistantError as error:  # the stream has begun: the error goes in the stream
            yield _event({"error": {"message": str(error), "type": "server_error", "param": None, "code": None}})
        yield "data: [DONE]\n\n"

    # Leaving the generator (the client went away) stops the reply: see Reply.__iter__.
    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _completion_base(kind: str, model: str) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model}


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _finish(usage: Usage | None) -> str:
    return "length" if usage is not None and usage.finish_reason == "length" else "stop"


def _usage(usage: Usage | None) -> dict:
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
