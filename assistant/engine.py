"""Streaming generation: one owner of the model, a bounded queue of requests, events back.

    engine.reply(conversation, options) -> Reply          (raises BusyError when the queue is full)
    for event in reply: TurnsDropped? -> TextDelta* -> Usage   (errors are raised from the iterator)
    reply.stop()                                           (ends the reply after the current token)

A single worker thread runs every generation, so concurrent requests never race on the model; each
request gets its own event queue. When the model can decode several replies at once (the fast
decoder of a composed model), requests that are waiting when the worker takes one are answered
together, up to `max_batch`: a step then reads the weights once for all of them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .conversation import Conversation, fit_to_context
from .detokenize import IncrementalDetokenizer, StopStrings
from .errors import BusyError, ContextOverflowError
from .models.base import Encoded, GenerationRequest, LoadedModel
from .sampling import GenerationOptions, SeededSampler
from .threads import use_model_threads

# While several people are asking (the last batch had more than one reply), the engine waits this
# long for the rest of a batch: their next requests come back within milliseconds of the batch's end,
# and a request that just misses a batch waits for all of it. One person alone never waits.
GATHER_S = 0.05

__all__ = ["Engine", "Event", "GenerationOptions", "Reply", "TextDelta", "TurnsDropped", "Usage"]


@dataclass(frozen=True)
class TextDelta:
    text: str  # the next piece of the reply; always whole characters


@dataclass(frozen=True)
class TurnsDropped:
    count: int  # the oldest turns left out so that the prompt fits the context
    context_tokens: int

    @property
    def message(self) -> str:
        turns = "turn" if self.count == 1 else "turns"
        return (
            f"the {self.count} oldest {turns} of this conversation no longer fit the model's context and were left out"
        )


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # image tokens included
    image_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None  # from the request to its first token, queueing included
    tokens_per_s: float  # decode speed after the first token
    total_s: float
    finish_reason: str  # "stop" (end of turn), "length" (max_new_tokens) or "cancelled"


Event = TextDelta | TurnsDropped | Usage


class _Job:
    def __init__(self, conversation: Conversation, options: GenerationOptions):
        self.conversation = conversation
        self.options = options
        self.events: queue.Queue = queue.Queue()
        self.stop_requested = threading.Event()
        self.submitted_at = time.perf_counter()


class Reply:
    """A reply being generated. Iterate for events; `stop()` from any thread ends it."""

    def __init__(self, job: _Job):
        self._job = job
        self.usage: Usage | None = None

    def __iter__(self) -> Iterator[Event]:
        try:
            while self.usage is None:
                event = self._job.events.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, Usage):
                    self.usage = event
                yield event
        finally:
            if self.usage is None:  # the caller stopped listening: stop generating for nobody
                self.stop()

    def stop(self) -> None:
        self._job.stop_requested.set()

    def text(self) -> str:
        """Wait for the whole reply and return its text."""
        return "".join(event.text for event in self if isinstance(event, TextDelta))


class Engine:
    """`workers` replies run at once: 1 for a local model (one owner of the weights and the KV
    cache); more for a remote model, whose server batches concurrent requests itself. A local model
    that can batch answers up to `max_batch` waiting requests together."""

    def __init__(self, model: LoadedModel, queue_size: int = 16, workers: int = 1, max_batch: int = 1):
        self.model = model
        self.max_batch = max_batch if getattr(model, "can_batch", False) else 1
        self._closing = False
        self._several_asking = False  # the last batch had more than one reply
        # A remote model streams a reply itself; a local one is driven by `_generate_locally`.
        self._run_job = getattr(model, "run_job", self._generate_locally)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._running = 0
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._serve, name=f"assistant-engine-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()
        self.warming_up = getattr(model, "warm_up", lambda: None)()  # a compile thread, or None

    def reply(self, conversation: Conversation, options: GenerationOptions | None = None) -> Reply:
        """Queue a reply to the conversation's last message; the events stream as it is generated."""
        options = options or GenerationOptions()
        if options.max_new_tokens >= self.model.context_tokens:
            raise ContextOverflowError(
                f"max_new_tokens={options.max_new_tokens} leaves no room for the prompt in this model's "
                f"{self.model.context_tokens}-token context"
            )
        job = _Job(conversation, options)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise BusyError(
                f"the assistant is busy ({self._jobs.maxsize} requests are waiting); try again in a moment"
            ) from None
        return Reply(job)

    @property
    def idle(self) -> bool:
        """No generation running and none waiting."""
        return self._running == 0 and self._jobs.empty()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued work and end the worker threads."""
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.join(timeout)

    def _serve(self) -> None:
        use_model_threads()
        while not self._closing and (job := self._jobs.get()) is not None:
            jobs = [job, *self._also_waiting()]
            with self._lock:
                self._running += len(jobs)
            try:
                self._run(jobs)
            finally:
                with self._lock:
                    self._running -= len(jobs)

    def _also_waiting(self) -> list[_Job]:
        """Requests already queued that can join the one just taken (up to max_batch in all)."""
        jobs: list[_Job] = []
        deadline = time.perf_counter() + (GATHER_S if self._several_asking else 0.0)
        while len(jobs) + 1 < self.max_batch:
            wait = deadline - time.perf_counter()
            try:
                job = self._jobs.get(timeout=wait) if wait > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:  # close(): end after this batch
                self._closing = True
                break
            jobs.append(job)
        self._several_asking = bool(jobs)
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        cancelled = [job for job in jobs if job.stop_requested.is_set()]  # stopped while waiting in the queue
        for job in cancelled:
            job.events.put(Usage(0, 0, 0, None, 0.0, 0.0, "cancelled"))
        jobs = [job for job in jobs if job not in cancelled]
        if len(jobs) > 1:
            self._generate_together(jobs)
            return
        for job in jobs:
            try:
                self._run_job(job)
            except BaseException as error:  # handed to the caller, who raises it
                job.events.put(error)

    def _generate_locally(self, job: _Job) -> None:
        request = self._prepare(job)
        self.model.generate(
            request.encoded,
            request.max_new_tokens,
            request.logits_processor,
            request.stopping_criteria,
            request.streamer,
        )

    def _generate_together(self, jobs: list[_Job]) -> None:
        requests = []
        for job in jobs:
            try:
                requests.append(self._prepare(job))
            except BaseException as error:  # this request's own problem (e.g. its prompt is too long)
                job.events.put(error)
        if not requests:
            return
        try:
            self.model.generate_batch(requests)
        except BaseException as error:
            for request in requests:
                if not request.streamer.ended:
                    request.streamer.job.events.put(error)

    def _prepare(self, job: _Job) -> GenerationRequest:
        # 1. Fit the conversation into the context, leaving room for the reply.
        limit = self.model.context_tokens - job.options.max_new_tokens
        encoded, dropped = fit_to_context(job.conversation, self.model.encode, limit)
        if dropped:
            job.events.put(TurnsDropped(dropped, self.model.context_tokens))
        # 2. Generate, streaming each token's text as soon as it forms whole characters; the stream
        #    says how it went (Usage) when the reply ends.
        stream = _TokenStream(
            job,
            IncrementalDetokenizer(self.model.tokenizer),
            self.model.eos_token_ids,
            StopStrings(job.options.stop),
            encoded,
        )
        return GenerationRequest(
            encoded,
            job.options.max_new_tokens,
            LogitsProcessorList([SeededSampler(job.options, self.model.device)]),
            StoppingCriteriaList([_StopWhenAsked(job.stop_requested)]),
            stream,
        )


class _StopWhenAsked(StoppingCriteria):
    def __init__(self, stop_requested: threading.Event):
        self.stop_requested = stop_requested

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.stop_requested.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _TokenStream(BaseStreamer):
    """Receives token ids from `generate` and turns them into TextDelta events with timings."""

    def __init__(
        self,
        job: _Job,
        detokenizer: IncrementalDetokenizer,
        eos_token_ids: list[int],
        stops: StopStrings,
        encoded: Encoded,
    ):
        self.job = job
        self.encoded = encoded
        self.ended = False
        self.detokenizer = detokenizer
        self.stops = stops
        self.eos_token_ids = set(eos_token_ids)
        self.prompt_seen = False
        self.token_ids: list[int] = []
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self._take(int(token_id))

    def _take(self, token_id: int) -> None:
        self.last_token_at = time.perf_counter()
        self.first_token_at = self.first_token_at or self.last_token_at
        self.token_ids.append(token_id)
        if token_id not in self.eos_token_ids:
            self._show(self.detokenizer.push(token_id))
        if self.stops.stopped:  # a stop string: end generation after this token
            self.job.stop_requested.set()

    def end(self) -> None:
        self._show(self.detokenizer.flush())
        self._put(self.stops.flush())
        self.ended = True
        self.job.events.put(self.usage())

    def _show(self, text: str) -> None:
        self._put(self.stops.push(text))

    def _put(self, text: str) -> None:
        if text:
            self.job.events.put(TextDelta(text))

    def usage(self) -> Usage:
        now = time.perf_counter()
        decoded = len(self.token_ids) - 1
        decode_s = (self.last_token_at or now) - (self.first_token_at or now)
        return Usage(
            prompt_tokens=self.encoded.prompt_tokens,
            image_tokens=self.encoded.image_tokens,
            completion_tokens=len(self.token_ids),
            time_to_first_token_s=None if self.first_token_at is None else self.first_token_at - self.job.submitted_at,
            tokens_per_s=decoded / decode_s if decoded > 0 and decode_s > 0 else 0.0,
            total_s=now - self.job.submitted_at,
            finish_reason=self._finish_reason(),
        )

    def _finish_reason(self) -> str:
        if self.stops.stopped or (self.token_ids and self.token_ids[-1] in self.eos_token_ids):
            return "stop"
        return "cancelled" if self.job.stop_requested.is_set() else "length"
