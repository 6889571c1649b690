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
