"""A transcript written out: one writer per format, found by name (as whisper's `get_writer`), for the
HTTP API's `response_format` and the command line alike.

    write_transcript(transcript, "srt")  ->  "1\\n00:00:00,000 --> 00:00:02,500\\nHello.\\n"

    text          the words
    json          {"text": ...} (OpenAI's default)
    verbose_json  text, language, duration and segments, as OpenAI's API gives them
    srt, vtt      subtitles: SubRip and WebVTT
    lines         "[00:00.00 -> 00:02.50] Hello." a line per segment (`assistant transcribe --timestamps`)
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .transcriber import SpeechError, Transcript

Writer = Callable[[Transcript], str]


def write_transcript(transcript: Transcript, format: str) -> str:
    """`transcript` in `format` (one of TRANSCRIPT_FORMATS)."""
    return get_writer(format)(transcript)


def get_writer(format: str) -> Writer:
    try:
        return WRITERS[format]
    except KeyError:
        raise SpeechError(f"unknown transcript format {format!r}; use one of {', '.join(WRITERS)}") from None


def _text(transcript: Transcript) -> str:
    return transcript.text


def _json(transcript: Transcript) -> str:
    return json.dumps({"text": transcript.text}, ensure_ascii=False)


def _verbose_json(transcript: Transcript) -> str:
    segments = [{"id": i, "start": s.start, "end": s.end, "text": s.text} for i, s in enumerate(transcript.segments)]
    body = {
        "task": "transcribe",
        "language": transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": segments,
    }
    return json.dumps(body, ensure_ascii=False)


def _srt(transcript: Transcript) -> str:
    return _subtitles(transcript, ",", numbered=True)


def _vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + _subtitles(transcript, ".", numbered=False)


def _lines(transcript: Transcript) -> str:
    return "".join(f"[{_clock(s.start)} -> {_clock(s.end)}] {s.text.strip()}\n" for s in transcript.segments)


def _subtitles(transcript: Transcript, decimal: str, numbered: bool) -> str:
    blocks = []
    for number, segment in enumerate(transcript.segments, start=1):
        timing = f"{_timestamp(segment.start, decimal)} --> {_timestamp(segment.end, decimal)}"
        blocks.append("\n".join(([str(number)] if numbered else []) + [timing, segment.text.strip()]))
    return "\n\n".join(blocks) + "\n"


def _timestamp(seconds: float, decimal: str) -> str:
    """HH:MM:SS,mmm (SubRip) or HH:MM:SS.mmm (WebVTT)."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _clock(seconds: float) -> str:
    """MM:SS.ss, for reading on a console."""
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes):02d}:{seconds:05.2f}"


WRITERS: dict[str, Writer] = {
    "json": _json,
    "text": _text,
    "verbose_json": _verbose_json,
    "srt": _srt,
    "vtt": _vtt,
    "lines": _lines,
}
TRANSCRIPT_FORMATS = tuple(WRITERS)
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "vtt": "text/vtt"}  # else text/plain
