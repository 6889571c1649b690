"""A local model's reply, from a `ReplyRequest` to the hooks transformers' generation takes:

    conversation --fit into the context (TurnsDropped when old turns go)--> Encoded prompt
    options --> SeededSampler (a logits processor) and a stop check (a stopping criterion)
    token ids --IncrementalDetokenizer, StopStrings--> TextDelta events, then Usage

`generate` (transformers') and the fast decoder both drive these hooks, so every local model streams,
stops and reports its usage alike.
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..conversation import fit_to_context
from ..detokenize import IncrementalDetokenizer, StopStrings
from ..events import TextDelta, TurnsDropped, Usage
from ..sampling import SeededSampler
from .base import Encoded, GenerationRequest, ReplyRequest


def start_generation(model, request: ReplyRequest) -> GenerationRequest:
    """`request` made ready for `model` (a LoadedModel): its prompt fitted into the context, leaving
    room for the reply, and the engine's sampler, stop check and token stream plugged in."""
    limit = model.context_tokens - request.options.max_new_tokens
    encoded, dropped = fit_to_context(request.conversation, model.encode, limit)
    if dropped:
        request.emit(TurnsDropped(dropped, model.context_tokens))
    stream = TokenStream(request, model.tokenizer, model.eos_token_ids, encoded)
    return GenerationRequest(
        encoded,
        request.options.max_new_tokens,
        LogitsProcessorList([SeededSampler(request.options, model.device)]),
        StoppingCriteriaList([StopWhenAsked(request)]),
        stream,
    )


class StopWhenAsked(StoppingCriteria):
    """Ends generation after the current token once the request's stop is asked for."""

    def __init__(self, request: ReplyRequest):
        self.request = request

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stopped = self.request.stop_requested
        return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool, device=input_ids.device)


class TokenStream(BaseStreamer):
    """Receives token ids from `generate` and turns them into TextDelta events with timings."""

    def __init__(self, request: ReplyRequest, tokenizer, eos_token_ids: list[int], encoded: Encoded):
        self.request = request
        self.encoded = encoded
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stops = StopStrings(request.options.stop)
        self.eos_token_ids = set(eos_token_ids)
        self.prompt_seen = False
        self.text_started = False
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
            self.request.stop()

    def end(self) -> None:
        self._show(self.detokenizer.flush())
        self._put(self.stops.flush())
        self.request.emit(self.usage())

    def _show(self, text: str) -> None:
        if not self.text_started:
            # After a prompt ending "Assistant:", the model's first word comes with its space, which
            # the chat template writes itself when the reply is put back ("Assistant: " + text). Without
            # it, the next turn's prompt holds the very tokens the model generated, which the fast
            # decoder then reuses instead of reading them again (models/fast_decode.py Prompt).
            text = text.removeprefix(" ")
            self.text_started = bool(text)
        self._put(self.stops.push(text))

    def _put(self, text: str) -> None:
        if text:
            self.request.emit(TextDelta(text))

    def usage(self) -> Usage:
        now = time.perf_counter()
        decoded = len(self.token_ids) - 1
        decode_s = (self.last_token_at or now) - (self.first_token_at or now)
        submitted_at = self.request.submitted_at
        return Usage(
            prompt_tokens=self.encoded.prompt_tokens,
            image_tokens=self.encoded.image_tokens,
            completion_tokens=len(self.token_ids),
            time_to_first_token_s=None if self.first_token_at is None else self.first_token_at - submitted_at,
            tokens_per_s=decoded / decode_s if decoded > 0 and decode_s > 0 else 0.0,
            total_s=now - submitted_at,
            finish_reason=self._finish_reason(),
        )

    def _finish_reason(self) -> str:
        if self.stops.stopped or (self.token_ids and self.token_ids[-1] in self.eos_token_ids):
            return "stop"
        return "cancelled" if self.request.stop_requested else "length"
