"""A recording transcribed while it is being made: the browser's microphone, streamed.

The person's speech is cut into pieces at their pauses. Each finished piece is transcribed once, as
soon as its pause is heard; the open piece gets a preview transcript now and then. When the person
stops, only the open piece (what was said since the last pause) remains to transcribe, so a long
question's transcript is ready about as soon as a short one's.

    live = assistant.live_transcription(language_hint="en")
    for chunk in microphone:                     # any sample rate, any length
        preview = live.add(chunk, sample_rate)   # finished pieces + the open piece's preview
    heard = live.finish()                        # the final transcript (replaces the preview)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from .audio import SAMPLE_RATE, StreamResampler
from .transcriber import Transcript

PAUSE_S = 0.7  # silence after speech that ends a piece: a breath between sentences is shorter
PREVIEW_EVERY_S = 1.0  # new audio between two preview transcripts of the open piece
# A piece is never longer than this: past it, it is cut at the end of its latest speech even without
# a pause, so that what remains at the end stays short (and fits Whisper's short window).
MAX_PIECE_S = 20.0
PIECE_VAD = VadOptions(min_silence_duration_ms=int(PAUSE_S * 1000), speech_pad_ms=200)

TranscribePiece = Callable[[np.ndarray, "str | None"], Transcript]  # (16 kHz samples, language hint)


@dataclass(frozen=True)
class Heard:
    text: str  # the whole transcript, "" when nothing was said
    language: str | None  # of the last piece with words
    audio: np.ndarray  # everything recorded, 16 kHz mono float32 (for the replay file)


class LiveTranscription:
    def __init__(self, transcribe: TranscribePiece, language_hint: str | None = None):
        self._transcribe = transcribe
        self.language = language_hint
        self._resampler: StreamResampler | None = None
        self._chunks: list[np.ndarray] = []  # what was recorded, at 16 kHz
        self._recorded = 0  # samples recorded
        self._piece_start = 0  # the open piece starts here; everything before is in self._pieces
        self._previewed_at = 0
        self._pieces: list[str] = []
        self._preview = ""

    @property
    def text(self) -> str:
        """The finished pieces' transcript and the open piece's preview."""
        return " ".join(piece for piece in (*self._pieces, self._preview) if piece)

    def add(self, samples: np.ndarray, sample_rate: int) -> str:
        """Append a chunk of the recording (int16 or float, mono or [n, channels]); returns `text`."""
        if self._resampler is None:
            self._resampler = StreamResampler(sample_rate)
        self._append(self._resampler.resample(samples))
        if (self._recorded - self._previewed_at) / SAMPLE_RATE >= PREVIEW_EVERY_S:
            self._previewed_at = self._recorded
            self._close_finished_pieces()
            self._preview = self._transcribe_piece(self._audio()[self._piece_start :])
        return self.text

    def finish(self) -> Heard:
        """The final transcript: the open piece is transcribed now, and nothing else is."""
        if self._resampler is not None:
            self._append(self._resampler.flush())
        self._preview = ""
        last = self._transcribe_piece(self._audio()[self._piece_start :])
        text = " ".join(piece for piece in (*self._pieces, last) if piece)
        return Heard(text, self.language if text else None, self._audio())

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self._recorded += samples.size

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.float32)

    def _close_finished_pieces(self) -> None:
        """Transcribe, once, the open piece up to its last pause (or up to its latest speech, if it
        grew past MAX_PIECE_S), and start the next piece there."""
        open_piece = self._audio()[self._piece_start :]
        cut = piece_end(open_piece)
        if cut is None and open_piece.size > MAX_PIECE_S * SAMPLE_RATE:
            speech = get_speech_timestamps(open_piece, PIECE_VAD)
            cut = speech[-1]["end"] if speech else open_piece.size
        if cut:
            self._pieces.append(self._transcribe_piece(open_piece[:cut]))
            self._piece_start += cut

    def _transcribe_piece(self, samples: np.ndarray) -> str:
        if samples.size < SAMPLE_RATE // 10:
            return ""
        transcript = self._transcribe(samples, self.language)
        if transcript.has_speech:
            self.language = transcript.language
        return transcript.text


def piece_end(samples: np.ndarray) -> int | None:
    """Where the last pause of PAUSE_S or more after speech begins (a sample index), or None if
    the speech has no such pause yet."""
    speech = get_speech_timestamps(samples, PIECE_VAD)
    pause = int(PAUSE_S * SAMPLE_RATE)
    ends = [
        chunk["end"]
        for chunk, following in zip(speech, [*speech[1:], {"start": samples.size}])
        if following["start"] - chunk["end"] >= pause
    ]
    return ends[-1] if ends else None
