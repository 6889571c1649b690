"""A reply that talks: the reply's events pass through unchanged, and each sentence is spoken as
soon as it is complete, so sound starts after the first sentence, not after the whole answer.

Synthesis runs on a thread of its own: the model keeps generating while a sentence is spoken.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

from ..events import Event, SpeechChunk, TextDelta
from .speakable import SentenceStream, speakable
from .synthesizer import Synthesizer

_DONE = object()


def spoken(events: Iterable[Event], synthesizer: Synthesizer, speed: float = 1.0) -> Iterator[Event]:
    """The events, with a SpeechChunk after each sentence once its audio is ready (in order), and
    the last ones after the reply's end. Closing the iterator (Stop) drops what is not yet spoken."""
    sentences, to_speak, ready = SentenceStream(), queue.Queue(), queue.Queue()
    stopped = threading.Event()
    voice = threading.Thread(target=_speak_each, args=(to_speak, ready, synthesizer, speed, stopped), daemon=True)
    voice.start()
    try:
        for event in events:
            yield event
            if isinstance(event, TextDelta):
                for sentence in sentences.push(event.text):
                    to_speak.put(sentence)
            yield from _ready(ready, wait=False)
        for sentence in sentences.flush():
            to_speak.put(sentence)
        to_speak.put(_DONE)
        yield from _ready(ready, wait=True)
    finally:
        stopped.set()
        to_speak.put(_DONE)


def _speak_each(
    to_speak: queue.Queue, ready: queue.Queue, synthesizer: Synthesizer, speed: float, stopped: threading.Event
) -> None:
    while (sentence := to_speak.get()) is not _DONE and not stopped.is_set():
        try:
            if text := speakable(sentence):
                ready.put(SpeechChunk(sentence, synthesizer.synthesize(text, speed)))
        except Exception as error:  # handed to the listener, who raises it
            ready.put(error)
            return
    ready.put(_DONE)


def _ready(ready: queue.Queue, wait: bool) -> Iterator[SpeechChunk]:
    while True:
        try:
            item = ready.get(block=wait)
        except queue.Empty:
            return
        if item is _DONE:
            return
        if isinstance(item, Exception):
            raise item
        yield item
