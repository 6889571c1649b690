"""OpenAI-compatible HTTP routes, served on the same port as the chat. They only translate OpenAI's
JSON into core calls and back; the core validates media, transcribes and generates.

    GET  /v1/models
    POST /v1/chat/completions        messages with text, image_url (data URLs) and input_audio parts;
                                     stream (server-sent events ending with [DONE]) or not  (chat.py)
    POST /v1/audio/transcriptions    multipart; json, text, verbose_json, srt or vtt        (audio.py)
    POST /v1/audio/speech            text -> wav, mp3, flac, opus or pcm, in the piper voice (audio.py)

Errors use OpenAI's body (errors.py); none of them stops the server.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..core import Assistant
from . import audio, chat
from .errors import RequestLimits, answering, parse_json

__all__ = ["build_api"]


def build_api(assistant: Assistant) -> APIRouter:
    router = APIRouter(prefix="/v1")
    limits = RequestLimits(assistant.settings)

    def route(handle):
        """`handle(request)` behind the key check, with every failure as OpenAI's error body."""

        @functools.wraps(handle)
        async def endpoint(request: Request) -> Response:
            return await answering(request, assistant.settings, lambda: handle(request))

        return endpoint

    @router.get("/models")
    @route
    async def models(request: Request) -> Response:
        model = {"id": assistant.model.name, "object": "model", "created": 0, "owned_by": "assistant"}
        return JSONResponse({"object": "list", "data": [model]})

    @router.post("/chat/completions")
    @route
    async def chat_completions(request: Request) -> Response:
        asked = chat.parse_chat(await limits.read_body(request))
        conversation, options = await run_in_threadpool(chat.conversation_and_options, assistant, asked)
        reply = await run_in_threadpool(lambda: assistant.reply(conversation, **options))
        if asked.stream:
            # The first event is awaited before answering, so that a request the model refuses
            # (too long for the context, say) still gets an error status, not a broken stream.
            events = iter(reply)
            first = await run_in_threadpool(next, events)
            include_usage = (asked.stream_options or {}).get("include_usage", False)
            return chat.stream(first, events, assistant.model.name, include_usage)
        return await run_in_threadpool(chat.whole, reply, assistant.model.name)

    @router.post("/audio/transcriptions")
    @route
    async def transcriptions(request: Request) -> Response:
        await limits.read_body(request, keep=False)
        form = await request.form(max_files=1, max_part_size=limits.max_bytes)
        return await run_in_threadpool(audio.transcribe, assistant, form)

    @router.post("/audio/speech")
    @route
    async def speech(request: Request) -> Response:
        asked = parse_json(await limits.read_body(request), audio.SpeechRequest)
        return await run_in_threadpool(audio.speech, assistant, asked)

    return router
