"""Streaming generation: one owner of the model, a bounded queue of requests, events back.

    engine.reply(conversation, options) -> Reply          (raises BusyError when the queue is full)
    for event in reply: TurnsDropped? -> TextDelta* -> Usage   (errors are raised from the iterator)
    reply.stop()                                           (ends the reply after the current token)

A single worker thread runs every generation, so concurrent requests never race on the model; each
request gets its own event queue. When the model can decode several replies at once (the fast
decoder of a composed model), requests that are waiting when the worker takes one are answered
together, up to `max_batch`: a step then reads the weights once for all of them. The engine and its
models meet at one contract, `ChatModel.answer(requests)` (models/base.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .conversation import Conversation
from .errors import BusyError, ContextOverflowError
from .events import Event, TextDelta, Usage
from .models.base import ChatModel, ReplyRequest
from .sampling import GenerationOptions
from .threads import use_model_threads

# While several people are asking (the last batch had more than one reply), the engine waits this
# long for the rest of a batch: their next requests come back within milliseconds of the batch's end,
# and a request that just misses a batch waits for all of it. One person alone never waits.
GATHER_S = 0.05

__all__ = ["Engine", "Reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Preparation:
    """Photos to prepare ahead of their question (ChatModel.prepare_images), queued as replies are."""

    images: list


class Reply:
    """A reply being generated. Iterate for events; `stop()` from any thread ends it."""

    def __init__(self, request: ReplyRequest):
        self._request = request
        self.usage: Usage | None = None

    def __iter__(self) -> Iterator[Event]:
        try:
            while self.usage is None:
                event = self._request.next_event()
                if isinstance(event, Usage):
                    self.usage = event
                yield event
        finally:
            if self.usage is None:  # the caller stopped listening: stop generating for nobody
                self.stop()

    def stop(self) -> None:
        self._request.stop()

    def text(self) -> str:
        """Wait for the whole reply and return its text."""
        return "".join(event.text for event in self if isinstance(event, TextDelta))


class Engine:
    """`workers` replies run at once: 1 for a local model (one owner of the weights and the KV
    cache); more for a remote model, whose server batches concurrent requests itself. A local model
    that can batch answers up to `max_batch` waiting requests together."""

    def __init__(self, model: ChatModel, queue_size: int = 16, workers: int = 1, max_batch: int = 1):
        self.model = model
        self.max_batch = max_batch if model.can_batch else 1
        self._closing = False
        self._several_asking = False  # the last batch had more than one reply
        self._requests: queue.Queue[ReplyRequest | _Preparation | None] = queue.Queue(maxsize=queue_size)
        self._running = 0
        self._preparing = 0  # photos queued or being prepared ahead of their question
        self._deferred: list[_Preparation] = []  # preparations met while gathering a batch: after it
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._serve, name=f"assistant-engine-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()
        self.warming_up = model.warm_up()  # a compile thread, or None

    def reply(self, conversation: Conversation, options: GenerationOptions | None = None) -> Reply:
        """Queue a reply to the conversation's last message; the events stream as it is generated."""
        options = options or GenerationOptions()
        if options.max_new_tokens >= self.model.context_tokens:
            raise ContextOverflowError(
                f"max_new_tokens={options.max_new_tokens} leaves no room for the prompt in this model's "
                f"{self.model.context_tokens}-token context"
            )
        request = ReplyRequest(conversation, options)
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            raise BusyError(
                f"the assistant is busy ({self._requests.maxsize} requests are waiting); try again in a moment"
            ) from None
        return Reply(request)

    def prepare(self, images: list) -> bool:
        """Have the model do ahead what a question about these photos will need (`prepare_images`),
        in turn with the replies; whether it was queued (not when the queue is full: it is only a head
        start)."""
        with self._lock:
            self._preparing += 1  # counted from here: `idle` is false until it is done
        try:
            self._requests.put_nowait(_Preparation(images))
        except queue.Full:
            with self._lock:
                self._preparing -= 1
            return False
        return True

    @property
    def waiting(self) -> int:
        """Requests in the queue, not yet taken by a worker."""
        return self._requests.qsize()

    @property
    def idle(self) -> bool:
        """No generation running and none waiting (nor photos being prepared)."""
        return self._running == 0 and self._preparing == 0 and self.waiting == 0

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued work and end the worker threads."""
        for _ in self._workers:
            self._requests.put(None)
        for worker in self._workers:
            worker.join(timeout)

    def _serve(self) -> None:
        use_model_threads()
        while not self._closing and (request := self._requests.get()) is not None:
            if isinstance(request, _Preparation):
                self._prepare(request)
                continue
            requests = [request, *self._also_waiting()]
            with self._lock:
                self._running += len(requests)
            try:
                self._answer(requests)
            finally:
                with self._lock:
                    self._running -= len(requests)
            while self._deferred:
                self._prepare(self._deferred.pop(0))

    def _also_waiting(self) -> list[ReplyRequest]:
        """Requests already queued that can join the one just taken (up to max_batch in all)."""
        requests: list[ReplyRequest] = []
        deadline = time.perf_counter() + (GATHER_S if self._several_asking else 0.0)
        while len(requests) + 1 < self.max_batch:
            wait = deadline - time.perf_counter()
            try:
                request = self._requests.get(timeout=wait) if wait > 0 else self._requests.get_nowait()
            except queue.Empty:
                break
            if request is None:  # close(): end after this batch
                self._closing = True
                break
            if isinstance(request, _Preparation):  # in its turn, after this batch
                self._deferred.append(request)
                continue
            requests.append(request)
        self._several_asking = bool(requests)
        return requests

    def _prepare(self, preparation: _Preparation) -> None:
        try:
            self.model.prepare_images(preparation.images)
        except Exception as error:  # noqa: BLE001 - a head start only: the question meets the error itself
            log.warning("photos could not be prepared ahead of their question: %s", error)
        finally:
            with self._lock:
                self._preparing -= 1

    def _answer(self, requests: list[ReplyRequest]) -> None:
        for request in requests:
            if request.stop_requested:  # stopped while it waited in the queue
                request.emit(Usage.cancelled_before_start())
        wanted = [request for request in requests if not request.finished]
        if not wanted:
            return
        try:
            self.model.answer(wanted)
        except BaseException as error:  # handed to the callers, who raise it
            for request in wanted:
                request.fail(error)
        for request in wanted:
            if not request.finished:  # left open, it would keep its caller waiting for ever
                request.fail(RuntimeError(f"{self.model.name} ended without finishing the reply"))
