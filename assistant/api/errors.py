"""What every route shares: OpenAI's error body, the API key, the request's size limit, JSON bodies.

Errors use OpenAI's body, {"error": {"message", "type", "param", "code"}}: 400 for a malformed or
unsupported request, 401 for a missing or wrong key, 413 for too much data, 502 when the remote
model server fails, 503 (with Retry-After) when the queue is full. None of them stops the server.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from ..errors import AssistantError, BusyError, MediaTooLargeError, RemoteModelError
from ..settings import Settings

RETRY_AFTER_S = 2  # what a 503 asks the client to wait


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


async def answering(request: Request, settings: Settings, answer: Callable[[], Awaitable[Response]]) -> Response:
    """Check the key, run `answer`, and turn every failure into OpenAI's error body."""
    try:
        _check_key(request, settings.api_key)
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


class RequestLimits:
    def __init__(self, settings: Settings):
        self.max_bytes = settings.max_request_bytes

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


def parse_json(body: bytes, model: type[BaseModel]):
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
