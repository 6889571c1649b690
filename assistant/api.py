"""OpenAI-compatible HTTP routes, served on the same port as the chat. They only translate OpenAI's
JSON into core calls and back; the core validates media, transcribes and generates.

    GET  /v1/models
    POST /v1/chat/completions        messages with text, image_url (data URLs) and input_audio parts;
                                     stream (server-sent events ending with [DONE]) or not
    POST /v1/audio/transcriptions    multipart; json, text, verbose_json, srt or vtt
    POST /v1/audio/speech            text -> wav, mp3, flac, opus or pcm, in the piper voice

Errors use OpenAI's body, {"error": {"message", "type", "param", "code"}}: 400 for a malformed or
unsupported request, 401 for a missing or wrong key, 413 for too much data, 503 (with Retry-After)
when the queue is full. None of them stops the server.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from .conversation import Message
from .core import Assistant
from .engine import Reply, TextDelta, TurnsDropped, Usage
from .errors import AssistantError, BusyError, MediaTooLargeError, RemoteModelError
from .fetch import fetch_image_url, parse_hosts
from .speech.synthesizer import SPEECH_FORMATS, encode_speech
from .speech.transcriber import Transcript

RETRY_AFTER_S = 2  # what a 503 asks the client to wait
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
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
# OpenAI's voice names; clients send one by default, so each is read as "this server's voice".
SPEECH_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else None
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=headers)


class SpeechRequest(BaseModel):
    """OpenAI's speech request."""

    model_config = ConfigDict(extra="allow")

    input: str
    model: str | None = None
    voice: str | None = None
    response_format: str = "mp3"  # OpenAI's default
    speed: float = 1.0
    instructions: str | None = None


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


def build_api(assistant: Assistant) -> APIRouter:
    router = APIRouter(prefix="/v1")
    limits = _RequestLimits(assistant)

    @router.get("/models")
    async def models(request: Request) -> Response:
        async def answer() -> Response:
            return _models(assistant)

        return await _answering(request, assistant, answer)

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        async def answer() -> Response:
            chat = _parse_chat(await limits.read_body(request))
            conversation, options = await run_in_threadpool(_conversation_and_options, assistant, chat)
            reply = await run_in_threadpool(lambda: assistant.reply(conversation, **options))
            if chat.stream:
                # The first event is awaited before answering, so that a request the model refuses
                # (too long for the context, say) still gets an error status, not a broken stream.
                events = iter(reply)
                first = await run_in_threadpool(next, events)
                return _stream(
                    first, events, assistant.model.name, (chat.stream_options or {}).get("include_usage", False)
                )
            return await run_in_threadpool(_whole, reply, assistant.model.name)

        return await _answering(request, assistant, answer)

    @router.post("/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        async def answer() -> Response:
            await limits.read_body(request, keep=False)
            form = await request.form(max_files=1, max_part_size=limits.max_bytes)
            return await run_in_threadpool(_transcribe, assistant, form)

        return await _answering(request, assistant, answer)

    @router.post("/audio/speech")
    async def speech(request: Request) -> Response:
        async def answer() -> Response:
            return await run_in_threadpool(
                _speech, assistant, _parse_json(await limits.read_body(request), SpeechRequest)
            )

        return await _answering(request, assistant, answer)

    return router


async def _answering(request: Request, assistant: Assistant, answer) -> Response:
    """Check the key, run `answer`, and turn every failure into OpenAI's error body."""
    try:
        _check_key(request, assistant.settings.api_key)
        return await answer()
    except ApiError as error:
        return error.response()
    except BusyError as error:
        return ApiError(503, str(error), code="server_busy", kind="server_error").response()
    except MediaTooLargeError as error:
        return ApiError(413, str(error), code="too_large").response()
    except RemoteModelError as error:
        return ApiError(502, str(error), code="upstream_error", kind="server_error").response()
    except AssistantError as error:
        return ApiError(400, str(error)).response()


def _check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    # A constant-time comparison: the time taken says nothing about how much of the key was right.
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")


class _RequestLimits:
    def __init__(self, assistant: Assistant):
        self.max_bytes = assistant.settings.max_request_bytes

    async def read_body(self, request: Request, keep: bool = True) -> bytes:
        """The body, refused (413) as soon as it is over the limit, whatever Content-Length says."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ApiError(
                413, f"the request is {int(declared):,} bytes; the limit is {self.max_bytes:,}", code="too_large"
            )
        if not keep:
            return b""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise ApiError(413, f"the request is over the {self.max_bytes:,}-byte limit", code="too_large")
        return bytes(body)


def _models(assistant: Assistant) -> JSONResponse:
    model = {"id": assistant.model.name, "object": "model", "created": 0, "owned_by": "assistant"}
    return JSONResponse({"object": "list", "data": [model]})


# --- chat completions ------------------------------------------------------------------------------


def _parse_chat(body: bytes) -> ChatRequest:
    chat = _parse_json(body, ChatRequest)
    _refuse_unsupported(chat, chat.model_dump())
    return chat


def _parse_json(body: bytes, model: type[BaseModel]):
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problem = error.errors()[0]
        param = ".".join(str(part) for part in problem["loc"])
        raise ApiError(400, f"{param}: {problem['msg']}", param=param) from None


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


def _conversation_and_options(assistant: Assistant, chat: ChatRequest):
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
        settings = assistant.settings
        self.fetch = (
            (parse_hosts(settings.image_url_hosts), settings.image_url_timeout_s, settings.max_image_bytes)
            if settings.image_urls
            else None
        )

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
        texts, images, recordings = [], [], []
        for index, part in enumerate(self._parts(content, where)):
            at = f"{where}.content.{index}"
            kind = part.get("type")
            if kind == "text":
                texts.append(_field(part, "text", str, at))
            elif kind == "image_url":
                images.append(self._image(part, at))
            elif kind == "input_audio":
                recordings.append(self._audio(part, at))
            else:
                raise ApiError(
                    400,
                    f"{at}.type {kind!r} is not supported; the part types are text, image_url and input_audio",
                    param=f"{at}.type",
                )
        return self.assistant.user_message_from_bytes("\n".join(texts), images, recordings)

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
        if self.fetch is None:
            raise ApiError(
                400,
                "image URLs are not fetched by this server; send the image as a data URL (data:image/png;base64,...)",
                param=f"{at}.image_url.url",
                code="image_urls_disabled",
            )
        return fetch_image_url(url, *self.fetch)

    def _audio(self, part: dict, at: str) -> bytes:
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise ApiError(400, f"{at}.input_audio must be an object with data and format", param=f"{at}.input_audio")
        return _base64(_field(audio, "data", str, f"{at}.input_audio"), f"{at}.input_audio.data")


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


def _whole(reply: Reply, model: str) -> JSONResponse:
    text = reply.text()
    usage = reply.usage
    body = _completion_base("chat.completion", model) | {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": _finish(usage)}],
        "usage": _usage(usage),
    }
    return JSONResponse(body)


def _stream(first, rest: Iterator, model: str, include_usage: bool) -> StreamingResponse:
    base = _completion_base("chat.completion.chunk", model)

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return _event(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} | extra)

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            for event in itertools.chain([first], rest):
                if isinstance(event, TextDelta):
                    yield chunk({"content": event.text})
                elif isinstance(event, Usage):
                    yield chunk({}, _finish(event))
                    if include_usage:
                        yield _event(base | {"choices": [], "usage": _usage(event)})
                elif isinstance(event, TurnsDropped):
                    continue
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


# --- speech ----------------------------------------------------------------------------------------


def _speech(assistant: Assistant, request: SpeechRequest) -> Response:
    if not request.input.strip():
        raise ApiError(400, "input is empty: give the text to speak", param="input")
    limit = assistant.settings.max_speech_chars
    if len(request.input) > limit:
        raise ApiError(
            400, f"input is {len(request.input):,} characters; the limit is {limit:,}", param="input", code="too_long"
        )
    if request.response_format not in SPEECH_FORMATS:
        raise ApiError(
            400,
            f"response_format {request.response_format!r} is not supported; use one of {', '.join(SPEECH_FORMATS)}",
            param="response_format",
        )
    if not 0.25 <= request.speed <= 4.0:
        raise ApiError(400, f"speed must be between 0.25 and 4.0, got {request.speed}", param="speed")
    if request.voice and request.voice not in SPEECH_VOICES and request.voice != assistant.synthesizer.name:
        raise ApiError(
            400,
            f"unknown voice {request.voice!r}; this server speaks with {assistant.synthesizer.name} "
            "(OpenAI's voice names are accepted as aliases)",
            param="voice",
        )
    data, media_type = encode_speech(assistant.speak(request.input, request.speed), request.response_format)
    return Response(data, media_type=media_type)


# --- transcriptions --------------------------------------------------------------------------------


def _transcribe(assistant: Assistant, form) -> Response:
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "send the recording as a multipart file field named 'file'", param="file")
    response_format: Literal["json", "text", "verbose_json", "srt", "vtt"] = form.get("response_format") or "json"
    if response_format not in TRANSCRIPT_FORMATS:
        raise ApiError(
            400,
            f"response_format {response_format!r} is not supported; use one of {', '.join(TRANSCRIPT_FORMATS)}",
            param="response_format",
        )
    language = form.get("language") or None
    if language is not None and not (language.isalpha() and 2 <= len(language) <= 3):
        raise ApiError(400, f"language {language!r} is not an ISO 639-1 code such as 'en'", param="language")
    data = upload.file.read()
    transcript = assistant.transcribe_bytes(
        data, language=language, timestamps=response_format in ("verbose_json", "srt", "vtt")
    )
    return _transcript_response(transcript, response_format)


def _transcript_response(transcript: Transcript, response_format: str) -> Response:
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(_subtitles(transcript, ",", numbered=True))
    if response_format == "vtt":
        return PlainTextResponse("WEBVTT\n\n" + _subtitles(transcript, ".", numbered=False), media_type="text/vtt")
    if response_format == "verbose_json":
        segments = [
            {"id": i, "start": s.start, "end": s.end, "text": s.text} for i, s in enumerate(transcript.segments)
        ]
        body = {
            "task": "transcribe",
            "language": transcript.language,
            "duration": transcript.duration,
            "text": transcript.text,
            "segments": segments,
        }
        return JSONResponse(body)
    return JSONResponse({"text": transcript.text})


def _subtitles(transcript: Transcript, decimal: str, numbered: bool) -> str:
    blocks = []
    for number, segment in enumerate(transcript.segments, start=1):
        timing = f"{_timestamp(segment.start, decimal)} --> {_timestamp(segment.end, decimal)}"
        blocks.append("\n".join(([str(number)] if numbered else []) + [timing, segment.text.strip()]))
    return "\n\n".join(blocks) + "\n"


def _timestamp(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"
