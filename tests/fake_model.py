"""A model that answers at once, for testing the engine's queueing, batching, stop and errors in
milliseconds (as nanochat tests its engine with a MockModel). It meets the `ChatModel` contract
like the real ones: the engine cannot tell it apart.

It echoes the last user message word by word, one TextDelta a word, and reads a few commands there:

    "fail: <reason>"   this request fails with an AssistantError(<reason>); the others go on
    "crash"            the model itself raises (every request it holds gets the error)
    "forget"           the model returns without ending this reply (a bug the engine must survive)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from assistant.errors import AssistantError
from assistant.events import TextDelta, Usage
from assistant.models.base import ReplyRequest


@dataclass
class FakeModel:
    name: str = "fake"
    context_tokens: int = 4096
    can_batch: bool = True
    step_s: float = 0.0  # seconds per word: time for a stop to land mid-reply
    load_seconds: float = 0.0
    device: str = "nowhere"
    dtype: str = "none"
    details: dict[str, str] = field(default_factory=dict)
    # Set: `answer` waits for it before it starts, so a test can fill the queue first.
    gate: threading.Event = field(default_factory=lambda: _open_gate())
    batches: list[list[str]] = field(default_factory=list)  # the questions answered together, in order
    busy: threading.Event = field(default_factory=threading.Event)  # set while `answer` runs

    def warm_up(self) -> threading.Thread | None:
        return None

    def prepare_images(self, images) -> None:
        self.batches.append([f"<{len(images)} photos prepared>"])

    def answer(self, requests: Sequence[ReplyRequest]) -> None:
        self.busy.set()
        try:
            self.gate.wait()
            questions = [request.conversation.messages[-1].text for request in requests]
            self.batches.append(questions)
            if "crash" in questions:
                raise RuntimeError("the fake model crashed")
            replies = [_Echo(request, question) for request, question in zip(requests, questions)]
            while any(reply.step() for reply in replies):
                time.sleep(self.step_s)
        finally:
            self.busy.clear()


class _Echo:
    def __init__(self, request: ReplyRequest, question: str):
        self.request = request
        self.words = question.split()
        self.said = 0
        self.ended = question == "forget"
        if question.startswith("fail:"):
            request.fail(AssistantError(question.removeprefix("fail:").strip()))
            self.ended = True

    def step(self) -> bool:
        """Say the next word, or end the reply; False once it has ended."""
        if self.ended:
            return False
        if self.request.stop_requested or self.said == len(self.words):
            self._end("cancelled" if self.request.stop_requested else "stop")
            return False
        self.request.emit(TextDelta(("" if self.said == 0 else " ") + self.words[self.said]))
        self.said += 1
        return True

    def _end(self, finish: str) -> None:
        self.ended = True
        total = time.perf_counter() - self.request.submitted_at
        self.request.emit(Usage(len(self.words), 0, self.said, None, 0.0, total, finish))


def _open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate
