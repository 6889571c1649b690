"""Everything a reply can produce, in the order it comes:

    TurnsDropped? -> (TextDelta | SpeechChunk)* -> Usage

`engine.reply(...)` yields TurnsDropped, TextDelta and Usage; `Assistant.spoken(reply)` adds a
SpeechChunk after each sentence once its audio is ready. Errors are not events: the reply's iterator
raises them. The faces `match` on `Event`; nothing here needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .speech.synthesizer import Speech

FinishReason = Literal["stop", "length", "cancelled"]


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
class TextDelta:
    text: str  # the next piece of the reply; always whole characters


@dataclass(frozen=True)
class SpeechChunk:
    text: str  # the sentence, as it was written
    speech: Speech


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # image tokens included
    image_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None  # from the request to its first token, queueing included
    tokens_per_s: float  # decode speed after the first token
    total_s: float
    finish_reason: FinishReason  # "stop" (end of turn), "length" (max_new_tokens) or "cancelled"

    @classmethod
    def cancelled_before_start(cls) -> Usage:
        """A reply stopped while it waited in the queue: nothing was generated."""
        return cls(0, 0, 0, None, 0.0, 0.0, "cancelled")


Event = TurnsDropped | TextDelta | SpeechChunk | Usage
