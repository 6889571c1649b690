"""A voice call's listening side: the microphone's stream in, the person's turns out, each transcribed
as soon as its closing silence has passed (turns.py), in the language they last spoke.

What the assistant itself says aloud can come back through the person's speakers. The browser's echo
cancellation removes most of it; what is left is rejected here: a turn whose words follow, in order,
what the assistant said in the last seconds (`assistant_said`) is its own voice, not a question.

    call = CallListener(transcribe, TurnSettings(silence_s=0.6))
    for chunk in microphone:                        # any sample rate, any length
        for turn in call.add(chunk, sample_rate):   # what the person said, turn by turn
            reply = answer(turn.text, turn.audio)
            call.assistant_said(reply)              # before it is played
"""

from __future__ import annotations

import difflib
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .audio import StreamResampler
from .live import TranscribePiece
from .turns import TurnDetector, TurnSettings

ECHO_WINDOW_S = 30.0  # what the assistant said this long ago can no longer come back as an echo
ECHO_SHARE = 0.8  # a turn whose words follow the assistant's own, in order, this much is its echo
ECHO_MIN_WORDS = 3  # shorter turns ("yes", "stop it") are never taken for an echo


@dataclass(frozen=True)
class CallTurn:
    text: str
    language: str | None
    audio: np.ndarray  # 16 kHz mono float32, the turn as heard
    cut: bool  # it ran past the longest turn and was cut there


class CallListener:
    def __init__(
        self,
        transcribe: TranscribePiece,
        settings: TurnSettings = TurnSettings(),
        language_hint: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._transcribe = transcribe
        self._detector = TurnDetector(settings)
        self._resampler: StreamResampler | None = None
        self.language = language_hint
        self._clock = clock
        self._said: deque[tuple[float, list[str]]] = deque()  # (when, words) the assistant said aloud

    @property
    def speaking(self) -> bool:
        """Whether the person is speaking now (a turn under way): what interrupts the assistant."""
        return self._detector.speaking

    def add(self, samples: np.ndarray, sample_rate: int) -> list[CallTurn]:
        """The next chunk of the stream (int16 or float, mono or [n, channels]); the turns it ended,
        transcribed, without those that held no words or were the assistant's own voice."""
        if self._resampler is None:
            self._resampler = StreamResampler(sample_rate)
        ended = self._detector.feed(self._resampler.resample(samples))
        return [heard for turn in ended if (heard := self._heard(turn)) is not None]

    def hang_up(self) -> CallTurn | None:
        """The turn under way when the call ends, if it held words."""
        turn = self._detector.flush()
        return self._heard(turn) if turn is not None else None

    def assistant_said(self, text: str) -> None:
        """`text` is being said aloud: a turn that repeats it is its echo."""
        now = self._clock()
        self._said.append((now, _words(text)))
        while self._said and now - self._said[0][0] > ECHO_WINDOW_S:
            self._said.popleft()

    def _heard(self, turn) -> CallTurn | None:
        transcript = self._transcribe(turn.audio, self.language)
        if not transcript.has_speech or not transcript.text.strip() or self.is_echo(transcript.text):
            return None
        self.language = transcript.language
        return CallTurn(transcript.text.strip(), transcript.language, turn.audio, turn.cut)

    def is_echo(self, text: str) -> bool:
        """Whether `text`, heard now, is the assistant's own voice: it follows in order what the
        assistant said in the last ECHO_WINDOW_S (ECHO_SHARE of its words, ECHO_MIN_WORDS at least)."""
        heard = _words(text)
        if len(heard) < ECHO_MIN_WORDS:
            return False
        now = self._clock()
        recent = [word for when, words in self._said if now - when <= ECHO_WINDOW_S for word in words]
        matcher = difflib.SequenceMatcher(None, heard, recent, autojunk=False)
        followed = sum(block.size for block in matcher.get_matching_blocks())
        return followed >= ECHO_SHARE * len(heard)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())
