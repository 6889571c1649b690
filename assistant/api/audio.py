"""POST /v1/audio/speech (text -> wav, mp3, flac, opus or pcm, in the piper voice) and
POST /v1/audio/transcriptions (multipart; json, text, verbose_json, srt or vtt)."""

from __future__ import annotations

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from ..core import SPEECH_FORMATS, TRANSCRIPT_MEDIA_TYPES, Assistant, encode_speech, write_transcript
from .errors import ApiError

TRANSCRIPT_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")  # OpenAI's
# OpenAI's voice names; clients send one by default, so each is read as "this server's voice".
SPEECH_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)


class SpeechRequest(BaseModel):
    """OpenAI's speech request."""

    model_config = ConfigDict(extra="allow")

    input: str
    model: str | None = None
    voice: str | None = None
    response_format: str = "mp3"  # OpenAI's default
    speed: float = 1.0
    instructions: str | None = None


def speech(assistant: Assistant, request: SpeechRequest) -> Response:
    voice = assistant.voice
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
    if request.voice and request.voice not in SPEECH_VOICES and request.voice != voice.synthesizer.name:
        raise ApiError(
            400,
            f"unknown voice {request.voice!r}; this server speaks with {voice.synthesizer.name} "
            "(OpenAI's voice names are accepted as aliases)",
            param="voice",
        )
    data, media_type = encode_speech(voice.speak(request.input, request.speed), request.response_format)
    return Response(data, media_type=media_type)


def transcribe(assistant: Assistant, form) -> Response:
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "send the recording as a multipart file field named 'file'", param="file")
    response_format = form.get("response_format") or "json"
    if response_format not in TRANSCRIPT_FORMATS:
        raise ApiError(
            400,
            f"response_format {response_format!r} is not supported; use one of {', '.join(TRANSCRIPT_FORMATS)}",
            param="response_format",
        )
    language = form.get("language") or None
    if language is not None and not (language.isalpha() and 2 <= len(language) <= 3):
        raise ApiError(400, f"language {language!r} is not an ISO 639-1 code such as 'en'", param="language")
    timestamps = response_format in ("verbose_json", "srt", "vtt")
    transcript = assistant.voice.transcribe_bytes(upload.file.read(), language=language, timestamps=timestamps)
    media_type = TRANSCRIPT_MEDIA_TYPES.get(response_format, "text/plain")
    return Response(write_transcript(transcript, response_format), media_type=media_type)
