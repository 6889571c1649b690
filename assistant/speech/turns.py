"""Where a person's turn ends in a live stream of audio (a voice call): the end of speech, read frame by
frame as the audio arrives, so that the answer can start as soon as they have finished.

Speech is told from silence and noise by Silero VAD, the model faster-whisper ships (an ONNX file run
by onnxruntime, both already here for Whisper), run as a stream: each 32-ms frame once, with the
model's state carried from the frame before, which gives the same probabilities as faster-whisper's
reading of the whole recording. A turn begins with a voiced frame and ends after `silence_s` of
unvoiced ones (Silero's own hysteresis: a frame counts as silence below `threshold - 0.15`); a voiced
stretch shorter than `min_speech_s` (a click, a cough, a door) is no turn, so that silence and noise
make none. The audio just before the first voiced frame is kept (`pre_roll_s`): the onset of the
first word is quieter than the threshold. A turn longer than `max_seconds` is cut there, and the
rest of that utterance is dropped up to its end.

    detector = TurnDetector(TurnSettings(silence_s=0.6))
    for chunk in microphone:                 # 16 kHz mono float32, any length
        for turn in detector.feed(chunk):    # the turns this chunk ended
            answer(turn.audio)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

FRAME = 512  # samples a Silero frame holds at 16 kHz (32 ms)
CONTEXT = 64  # samples of the frame before that the model reads with each frame
STATE_SHAPE = (1, 1, 128)  # the model's recurrent state (h and c)
HYSTERESIS = 0.15  # Silero's: a frame is silence below the threshold by this much
FRAME_S = FRAME / SAMPLE_RATE


@dataclass(frozen=True)
class TurnSettings:
    silence_s: float = 0.6  # silence that ends a turn (Open WebUI waits 2 s; fastrtc ~0.6 s)
    threshold: float = 0.5  # speech probability of a voiced frame (faster-whisper's default)
    min_speech_s: float = 0.25  # voiced time below which a stretch is no turn
    pre_roll_s: float = 0.2  # audio kept from before the first voiced frame
    max_seconds: float = 600.0  # a turn longer than this is cut (the app's max_audio_seconds)

    def __post_init__(self):
        if not 0.1 <= self.silence_s <= 10:
            raise ValueError(f"a turn's closing silence must be between 0.1 and 10 s, not {self.silence_s}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"the speech threshold is a probability between 0 and 1, not {self.threshold}")
        if self.max_seconds <= self.min_speech_s:
            raise ValueError("a turn's longest duration must be longer than its shortest speech")


@dataclass(frozen=True)
class Turn:
    """What the person said, from just before their first word to the start of the closing silence."""

    audio: np.ndarray  # 16 kHz mono float32
    speech_s: float  # voiced time in it
    cut: bool = False  # ended at max_seconds rather than by silence

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class StreamingVad:
    """Silero VAD over a stream: the speech probability of each whole frame fed, in order."""

    def __init__(self, session=None):
        if session is None:
            from faster_whisper.vad import get_vad_model  # the model file faster-whisper ships

            session = get_vad_model().session
        self._session = session
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32), np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)  # the end of the frame before (none: zeros)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Probabilities for `frames` (a whole number of frames, one after the other)."""
        frames = frames.reshape(-1, FRAME)
        if not len(frames):
            return np.zeros(0, dtype=np.float32)
        contexts = np.concatenate([self._context[None], frames[:-1, -CONTEXT:]])
        h, c = self._state
        probabilities, h, c = self._session.run(
            None, {"input": np.concatenate([contexts, frames], axis=1), "h": h, "c": c}
        )
        self._state = h, c
        self._context = frames[-1, -CONTEXT:].copy()
        return probabilities.reshape(-1)


class TurnDetector:
    """Feed it a live stream; it returns each turn as the silence after it (or its length) ends it."""

    def __init__(self, settings: TurnSettings = TurnSettings(), vad: StreamingVad | None = None):
        self.settings = settings
        self._vad = vad or StreamingVad()
        self._pending = np.zeros(0, dtype=np.float32)  # samples short of a whole frame
        self._before = deque(maxlen=max(0, round(settings.pre_roll_s / FRAME_S)))  # frames before a turn
        self._turn: list[np.ndarray] = []  # the frames of the turn under way
        self._voiced = 0  # its voiced frames
        self._silent = 0  # unvoiced frames since it was last voiced (Silero's hysteresis)
        self._dropping = False  # the rest of an utterance cut at max_seconds

    @property
    def speaking(self) -> bool:
        """Whether a turn is under way (the person is speaking, or paused for less than silence_s)."""
        return bool(self._turn) and not self._dropping

    def feed(self, samples: np.ndarray) -> list[Turn]:
        """Take the next samples (16 kHz mono float32, any number); the turns they end."""
        samples = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = len(samples) // FRAME * FRAME
        self._pending = samples[whole:]
        frames = samples[:whole].reshape(-1, FRAME)
        ended = []
        for frame, probability in zip(frames, self._vad(frames), strict=True):
            turn = self._step(frame, float(probability))
            if turn is not None:
                ended.append(turn)
        return ended

    def flush(self) -> Turn | None:
        """The turn under way when the stream ends (the call hung up mid-sentence), if it is one."""
        turn = None if self._dropping else self._finish(len(self._turn), cut=False)
        self._reset()
        return turn

    def _step(self, frame: np.ndarray, probability: float) -> Turn | None:
        voiced = probability >= self.settings.threshold
        silent = probability < self.settings.threshold - HYSTERESIS
        if not self._turn:
            if voiced:
                self._turn, self._voiced, self._silent = [*self._before, frame], 1, 0
            else:
                self._before.append(frame)
            return None
        self._turn.append(frame)
        if voiced:
            self._voiced, self._silent = self._voiced + (not self._dropping), 0
        elif silent or self._silent:  # once the silence began, unsure frames count toward it
            self._silent += 1
        if self._silent * FRAME_S >= self.settings.silence_s:
            turn = None if self._dropping else self._finish(len(self._turn) - self._silent, cut=False)
            self._reset()
            return turn
        if not self._dropping and len(self._turn) * FRAME_S >= self.settings.max_seconds:
            turn = self._finish(len(self._turn), cut=True)
            self._turn, self._dropping = [frame], True  # kept only to follow the utterance to its end
            return turn
        if self._dropping:
            self._turn = self._turn[-1:]
        return None

    def _finish(self, frames: int, cut: bool) -> Turn | None:
        """The turn of the first `frames` frames under way; None where its speech is too short to be one."""
        speech_s = self._voiced * FRAME_S
        if not self._turn or speech_s < self.settings.min_speech_s:
            return None
        return Turn(np.concatenate(self._turn[:frames]), speech_s, cut)

    def _reset(self) -> None:
        self._turn, self._voiced, self._silent, self._dropping = [], 0, 0, False
        self._before.clear()
