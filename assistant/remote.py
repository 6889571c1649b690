"""The remote backend: generation on an OpenAI-compatible server (vLLM, another instance of this
app, ...) through the official `openai` client, which brings streaming, time-outs and retries.

    assistant serve --backend openai --base-url http://gpu-box:8000/v1 [--remote-model NAME]

Everything else stays here: the UI, the API, personas, limits, and speech (recordings are
transcribed locally; the server gets text and images, as data URLs).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import openai

from .conversation import Conversation, Image, Text
from .errors import ModelUnavailableError, RemoteModelError
from .events import TextDelta, Usage
from .models.base import ReplyRequest
from .settings import Settings

JPEG_QUALITY = 90  # photos travel as JPEG: a tenth of the bytes of PNG, no visible loss
UNBOUNDED_CONTEXT = 1 << 20  # the remote server enforces its own context; this only bounds max_new_tokens


@dataclass
class RemoteModel:
    """A model served elsewhere (a `ChatModel`): each request is one streamed chat completion there."""

    name: str
    client: openai.OpenAI
    context_tokens: int = UNBOUNDED_CONTEXT
    load_seconds: float = 0.0
    device: str = "the remote server"  # for messages: where the model runs
    dtype: str = "as it serves it"
    details: dict[str, str] = field(default_factory=dict)
    can_batch: bool = False  # the server batches concurrent requests itself: the engine sends them as they come

    def warm_up(self) -> None:
        return None  # the server is ready or not; load_remote has asked it already

    def prepare_images(self, images) -> None:
        return None  # the server sees the photos with the question

    def answer(self, requests: Sequence[ReplyRequest]) -> None:
        for request in requests:
            try:
                self._stream_reply(request)
            except RemoteModelError as error:
                request.fail(error)

    def _stream_reply(self, request: ReplyRequest) -> None:
        """Stream one reply (TextDelta*, then Usage); stop when the request asks for it."""
        first_at = last_at = None
        usage, finish, pieces = None, None, 0
        try:
            with self._stream(request) as stream:
                for chunk in stream:
                    if request.stop_requested:
                        finish = "cancelled"
                        break  # leaving the block closes the connection: the server stops generating
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        if choice.delta.content:
                            last_at = time.perf_counter()
                            first_at = first_at or last_at
                            pieces += 1
                            request.emit(TextDelta(choice.delta.content))
                        finish = choice.finish_reason or finish
        except openai.APIStatusError as error:
            raise RemoteModelError(f"the model server answered HTTP {error.status_code}: {_message(error)}") from None
        except openai.APITimeoutError:
            raise RemoteModelError(f"the model server at {self.client.base_url} did not answer in time") from None
        except (openai.APIConnectionError, httpx.HTTPError) as error:
            raise RemoteModelError(
                f"lost the connection to the model server at {self.client.base_url} ({_reason(error)}); is it running?"
            ) from None
        except openai.APIError as error:  # an error event inside the stream
            raise RemoteModelError(f"the model server reported an error: {error.message}") from None
        if finish is None:
            raise RemoteModelError(f"the model server at {self.client.base_url} ended the reply before finishing it")
        request.emit(_usage(request, usage, finish, first_at, last_at, pieces))

    def _stream(self, request: ReplyRequest):
        options = request.options
        return self.client.chat.completions.create(
            model=self.name,
            messages=to_openai_messages(request.conversation),
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=options.max_new_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed,
            stop=list(options.stop) or None,
        )


def load_remote(settings: Settings) -> RemoteModel:
    """Connect to the server and pick its model; a server that cannot be reached is said at once."""
    if not settings.base_url:
        raise ModelUnavailableError("--backend openai needs --base-url, e.g. http://localhost:8000/v1")
    started = time.perf_counter()
    client = openai.OpenAI(
        base_url=settings.base_url,
        api_key=settings.remote_api_key or "none",  # servers without keys ignore it; the client needs one
        timeout=settings.remote_timeout_s,
        max_retries=settings.remote_retries,
    )
    name = settings.remote_model or _first_model(client, settings.base_url)
    reason = f"generation on {settings.base_url} (--backend openai)"
    details = {"profile": "remote", "reason": reason, "backend": "openai", "base_url": settings.base_url}
    return RemoteModel(
        name,
        client,
        context_tokens=settings.context_tokens or UNBOUNDED_CONTEXT,
        load_seconds=time.perf_counter() - started,
        details=details,
    )


def to_openai_messages(conversation: Conversation) -> list[dict]:
    """The conversation in OpenAI's message format, photos as JPEG data URLs."""
    messages = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []
    for message in conversation.messages:
        if message.role == "assistant":
            messages.append({"role": "assistant", "content": message.text})
            continue
        content = []
        for part in message.parts:
            if isinstance(part, Image):
                content.append({"type": "image_url", "image_url": {"url": _data_url(part)}})
            elif isinstance(part, Text):
                content.append({"type": "text", "text": part.text})
            else:
                raise RemoteModelError("a recording must be transcribed before it is sent to the model server")
        messages.append({"role": "user", "content": content})
    return messages


def _first_model(client: openai.OpenAI, base_url: str) -> str:
    try:
        models = client.models.list().data
    except openai.APIStatusError as error:
        raise ModelUnavailableError(
            f"the model server at {base_url} answered HTTP {error.status_code}: {_message(error)}"
        ) from None
    except (openai.APIConnectionError, httpx.HTTPError) as error:
        raise ModelUnavailableError(
            f"cannot reach the model server at {base_url} ({_reason(error)}); is it running?"
        ) from None
    if not models:
        raise ModelUnavailableError(f"the model server at {base_url} serves no model")
    return models[0].id


def _data_url(image: Image) -> str:
    buffer = io.BytesIO()
    image.image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _usage(request: ReplyRequest, usage, finish: str, first_at, last_at, pieces: int) -> Usage:
    completion = usage.completion_tokens if usage else pieces
    decode_s = (last_at - first_at) if first_at and last_at else 0.0
    now = time.perf_counter()
    return Usage(
        prompt_tokens=usage.prompt_tokens if usage else 0,
        image_tokens=0,  # the server does not say
        completion_tokens=completion,
        time_to_first_token_s=None if first_at is None else first_at - request.submitted_at,
        tokens_per_s=(completion - 1) / decode_s if completion > 1 and decode_s > 0 else 0.0,
        total_s=now - request.submitted_at,
        finish_reason={"length": "length", "cancelled": "cancelled"}.get(finish, "stop"),
    )


def _message(error: openai.APIStatusError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    return str(body.get("message") or error.message)


def _reason(error: Exception) -> str:
    cause = error.__cause__ or error
    return str(cause) or type(cause).__name__
