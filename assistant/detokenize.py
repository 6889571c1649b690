"""Turning a growing list of token ids into text deltas without ever emitting half a character.

Byte-level tokenizers split one UTF-8 character (an accent, a CJK character, an emoji) over several
tokens; decoding them one at a time shows U+FFFD. We decode a short window of recent tokens and hold
the text back while it ends in an incomplete character (the "prefix/read offset" method of
text-generation-inference), so the cost per token stays constant however long the reply grows.
"""

from __future__ import annotations

REPLACEMENT_CHARACTER = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self.prefix_offset = 0  # start of the window decoded for context (spaces depend on it)
        self.read_offset = 0  # tokens before this one have been emitted as text

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text ("" while a character is incomplete)."""
        self.token_ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """The text still held back at the end of the reply (an invalid byte sequence stays U+FFFD)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        prefix_text = self._decode(self.token_ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.token_ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or (new_text.endswith(REPLACEMENT_CHARACTER) and not final):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.token_ids)
        return new_text[len(prefix_text) :]

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=self.skip_special_tokens)


class StopStrings:
    """Ends streamed text at the first stop string (OpenAI's `stop`). Text that could still be the
    start of a stop string is held back until it is known not to be one, so no part of a stop
    string is ever shown."""

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(stop for stop in stops if stop)
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add streamed text; return what is safe to show. After a stop string, nothing more."""
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        self.pending += text
        found = [index for stop in self.stops if (index := self.pending.find(stop)) >= 0]
        if found:
            self.stopped = True
            shown, self.pending = self.pending[: min(found)], ""
            return shown
        held = max((self._overlap(stop) for stop in self.stops), default=0)
        shown, self.pending = self.pending[: len(self.pending) - held], self.pending[len(self.pending) - held :]
        return shown

    def flush(self) -> str:
        """The held-back text at the end of the reply (it turned out not to be a stop string)."""
        shown, self.pending = ("" if self.stopped else self.pending), ""
        return shown

    def _overlap(self, stop: str) -> int:
        """Length of the longest end of the pending text that begins `stop`."""
        for length in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if stop.startswith(self.pending[-length:]):
                return length
        return 0
