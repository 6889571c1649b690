"""Text as it should be heard: a reply written for the screen (Markdown, code, links, emoji) becomes
plain sentences a voice can read, and a streamed reply is cut into sentences as they complete.

    speakable("**Note:** see https://example.com/a?b=1 🙂")  ->  "Note: see a link on example.com."
"""

from __future__ import annotations

import re
import unicodedata

CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
INLINE_CODE = re.compile(r"`([^`]*)`")
IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
URL = re.compile(r"\b(?:https?://|www\.)([^\s/?#)]+)[^\s)]*", re.IGNORECASE)
HEADING = re.compile(r"^\s{0,3}#{1,6}\s*(.*)$", re.MULTILINE)
LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+(.*)$", re.MULTILINE)
QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
RULE = re.compile(r"^\s*([-*_])\s*(\1\s*){2,}$", re.MULTILINE)
EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}.*$", re.MULTILINE)
# Symbols read as words; anything else that is not a letter, digit or ordinary punctuation is dropped.
SAID = {
    "%": " percent",
    "&": " and ",
    "+": " plus ",
    "=": " equals ",
    "@": " at ",
    "°": " degrees",
    "€": " euros",
    "£": " pounds",
}
KEPT = set(".,;:!?'\"-()$ ")
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)|\n{2,}")
MIN_SENTENCE_CHARS = 12  # a shorter piece ("Dr.", "1.") joins the next one


def speakable(text: str) -> str:
    """Markdown, code, URLs, emoji and stray symbols removed or said in words."""
    text = CODE_BLOCK.sub(" (code shown on screen) ", text)
    text = INLINE_CODE.sub(r"\1", text)
    text = IMAGE.sub(r"\1", text)
    text = LINK.sub(r"\1", text)
    text = URL.sub(_link, text)
    text = TABLE_RULE.sub("", RULE.sub("", text))
    text = HEADING.sub(lambda m: _as_sentence(m.group(1)), QUOTE.sub("", text))
    text = LIST_ITEM.sub(lambda m: _as_sentence(m.group(1)), text)
    for _ in range(2):  # nested emphasis: **_word_**
        text = EMPHASIS.sub(r"\2", text)
    text = text.replace("|", ", ")
    text = "".join(_spoken_character(c) for c in text)
    text = re.sub(r"[ \t]+", " ", re.sub(r"\s*\n\s*", "\n", text))
    return re.sub(r" ([,.;:!?])", r"\1", text).strip()


def _link(match: re.Match) -> str:
    """A URL is said as the site it is on; punctuation after it still ends the sentence."""
    trailing = match.group(0)[len(match.group(0).rstrip(".,;:!?")) :]
    return f"a link on {match.group(1).removeprefix('www.').rstrip('.,;:!?')}{trailing}"


def _as_sentence(item: str) -> str:
    item = item.strip()
    return item if not item or item[-1] in ".!?:;" else f"{item}."


def _spoken_character(char: str) -> str:
    if char in SAID:
        return SAID[char]
    if char.isalnum() or char in KEPT or char == "\n":
        return char
    category = unicodedata.category(char)
    if category.startswith("Z"):
        return " "
    if category in ("Pd", "Pi", "Pf"):  # dashes and curly quotes: a pause
        return ", " if category == "Pd" else ""
    return ""  # emoji, arrows, asterisks, hashes, backslashes...


class SentenceStream:
    """Cuts streamed text into sentences as soon as each one ends."""

    def __init__(self) -> None:
        self.pending = ""

    def push(self, text: str) -> list[str]:
        """Add a piece of the reply; return the sentences it completed. Nothing is cut inside a code
        block (an unclosed one runs to the end): the block is mentioned once, when it is closed."""
        self.pending += text
        sentences = []
        start = 0
        code = [match.span() for match in CODE_BLOCK.finditer(self.pending)]  # an open block runs to the end
        for match in SENTENCE_END.finditer(self.pending):
            if any(begin <= match.start() < end for begin, end in code):
                continue
            piece = self.pending[start : match.start()].strip()
            if len(piece) >= MIN_SENTENCE_CHARS or "\n\n" in match.group(0):
                sentences.append(piece)
                start = match.end()
        self.pending = self.pending[start:]
        return [s for s in sentences if s]

    def flush(self) -> list[str]:
        """The last, unfinished sentence at the end of the reply."""
        rest, self.pending = self.pending.strip(), ""
        return [rest] if rest else []
