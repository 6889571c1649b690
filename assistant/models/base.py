"""The contract between the engine and a model, wherever the model runs.

    engine:  request = ReplyRequest(conversation, options)      one per reply asked for
             model.answer([request, ...])                       requests waiting together, up to max_batch
    model:   request.emit(TurnsDropped | TextDelta ... Usage)   the reply's events, Usage last
             request.fail(error)                                or the error its caller will see
             request.stop_requested                             asked to stop: end after this token

`ChatModel` is what the engine calls; `LocalModel` (transformers, in this process, models/local.py),
`ComposedModel` (models/composed.py) and `RemoteModel` (an OpenAI-compatible server, remote.py) meet
it, and so does the tests' fake model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..events import Event, Usage

if TYPE_CHECKING:
    from transformers import BatchFeature, LogitsProcessorList, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    from ..conversation import Conversation, Image
    from ..sampling import GenerationOptions


class ReplyRequest:
    """One reply asked of a model: the conversation to answer, how, and where the reply's events go.
    The engine's `Reply` reads them on the caller's side; `stop()` may be called from any thread."""

    def __init__(self, conversation: Conversation, options: GenerationOptions):
        self.conversation = conversation
        self.options = options
        self.submitted_at = time.perf_counter()  # the time to first token counts from here, queueing included
        self._events: queue.Queue[Event | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._finished = False

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """End the reply after the token being generated (or before it starts)."""
        self._stop.set()

    @property
    def finished(self) -> bool:
        """Its Usage or its error has been handed over: nothing more will come."""
        return self._finished

    def emit(self, event: Event) -> None:
        """The next event of the reply; a Usage ends it. Nothing is taken once it has ended."""
        if not self._finished:
            self._finished = isinstance(event, Usage)
            self._events.put(event)

    def fail(self, error: BaseException) -> None:
        """End the reply with `error`, raised where the caller reads it (unless it has already ended)."""
        if not self._finished:
            self._finished = True
            self._events.put(error)

    def next_event(self) -> Event:
        """The next event, waiting for it; an error the model handed over is raised here."""
        item = self._events.get()
        if isinstance(item, BaseException):
            raise item
        return item


@runtime_checkable
class ChatModel(Protocol):
    """What the engine needs of a model. The engine calls `answer` from its worker threads only: one
    thread for a local model (the one owner of its weights), several for a remote one."""

    name: str  # what was loaded: a hub id, a local directory, or the remote server's model
    context_tokens: int  # prompt + reply must fit in this many tokens
    load_seconds: float
    details: dict[str, str]  # shown to the user: profile, why it was chosen, how it decodes, ...
    device: Any  # where it runs, for messages (a torch.device, or words)
    dtype: Any  # its weights' type, for messages

    @property
    def can_batch(self) -> bool:
        """Whether `answer` decodes several requests at once (else it gets one at a time)."""
        ...

    def warm_up(self) -> threading.Thread | None:
        """Start getting ready in the background (a model that compiles does it here), returning the
        thread; None when there is nothing to do. The engine calls it once."""
        ...

    def answer(self, requests: Sequence[ReplyRequest]) -> None:
        """Generate each request's reply, emitting its events; a request that fails on its own (its
        prompt is too long, say) is failed alone. Raising fails every request not yet ended."""
        ...

    def prepare_images(self, images: Sequence[Image]) -> None:
        """Do ahead what a question about these photos will need (they are attached, the question is
        being typed); nothing where nothing can be done ahead. Called from the engine's worker."""
        ...


@dataclass
class Encoded:
    """A local model's prompt, ready for generation."""

    inputs: BatchFeature  # input_ids, attention_mask, pixel_values, ... for one sequence
    prompt_tokens: int  # all prompt tokens, image tokens included
    image_tokens: int  # prompt positions that hold image features


@dataclass
class GenerationRequest:
    """A local model's reply being generated: its prompt, and the sampler, stop check and token stream
    that the engine's request plugs into transformers' generation (see models/streaming.py)."""

    encoded: Encoded
    max_new_tokens: int
    logits_processor: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList
    streamer: BaseStreamer
