"""Messages made of text, image and audio parts; a conversation of them; rendering to the chat
format that Hugging Face chat templates take; fitting the history into a token budget.

Images are parts of the messages they came with, so photos of earlier turns stay in view: a new
photo never resets the conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import numpy as np
import PIL.Image

from .errors import AssistantError, ContextOverflowError

Role = Literal["system", "user", "assistant"]
ROLES = ("system", "user", "assistant")
# How much of a photo the model sees (OpenAI's `image_url.detail`): one view, the model's own tiling,
# or as many views as the machine's time budget allows (assistant/vision/detail.py). Least first.
Detail = Literal["low", "auto", "high"]
DETAILS: tuple[Detail, ...] = ("low", "auto", "high")


@dataclass(frozen=True)
class Text:
    text: str
    spoken: bool = False  # transcribed from the user's voice (shown to them as their words)
    language: str | None = None  # what it was spoken in (ISO 639-1), for spoken text


@dataclass(frozen=True, eq=False)
class Image:
    image: PIL.Image.Image  # 8-bit RGB, validated by assistant.media
    name: str = ""  # the file name the user gave, for messages and exports
    detail: Detail = "auto"

    def __post_init__(self) -> None:
        if self.detail not in DETAILS:
            raise ValueError(f"unknown image detail {self.detail!r}; the levels are: {', '.join(DETAILS)}")


@dataclass(frozen=True, eq=False)
class Audio:
    samples: np.ndarray  # float32 mono at 16 kHz, validated by assistant.media
    name: str = ""


Part = Text | Image | Audio


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; the roles are: {', '.join(ROLES)}")
        if not self.parts:
            raise ValueError("a message needs at least one part (text, image or audio)")
        if self.role != "user" and any(not isinstance(part, Text) for part in self.parts):
            raise ValueError(f"only user messages carry images or audio, not {self.role} messages")

    @classmethod
    def user(
        cls,
        text: str = "",
        images: Iterable[Image | PIL.Image.Image] = (),
        audio: Audio | None = None,
        spoken: Iterable[str] = (),
        spoken_language: str | None = None,
    ) -> Message:
        """A user message; images come first, as LLaVA-style models were trained to see them, then
        what was said (untranscribed `audio`, or `spoken` transcripts in `spoken_language`), then
        what was typed."""
        parts: list[Part] = [image if isinstance(image, Image) else Image(image) for image in images]
        if audio is not None:
            parts.append(audio)
        parts.extend(Text(transcript, spoken=True, language=spoken_language) for transcript in spoken)
        if text:
            parts.append(Text(text))
        return cls("user", tuple(parts))

    @property
    def spoken_text(self) -> str:
        """What the user said, as transcribed."""
        return "\n".join(part.text for part in self.parts if isinstance(part, Text) and part.spoken)

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls("assistant", (Text(text),))

    @property
    def text(self) -> str:
        return "\n".join(part.text for part in self.parts if isinstance(part, Text))

    @property
    def images(self) -> list[PIL.Image.Image]:
        return [part.image for part in self.parts if isinstance(part, Image)]


@dataclass
class Conversation:
    system_prompt: str = ""
    messages: list[Message] = field(default_factory=list)

    def add(self, message: Message) -> Conversation:
        if message.role == "system":
            raise ValueError("set the system prompt through Conversation.system_prompt, not as a message")
        self.messages.append(message)
        return self

    @property
    def images(self) -> list[PIL.Image.Image]:
        """Every image of every turn, in conversation order."""
        return [image for message in self.messages for image in message.images]

    @property
    def detail(self) -> Detail:
        """The most detail any of its photos asks for: a model's processor tiles a prompt's photos alike."""
        asked = [part.detail for message in self.messages for part in message.parts if isinstance(part, Image)]
        return max(asked, key=DETAILS.index, default="auto")

    def turns(self) -> list[list[Message]]:
        """Messages grouped into turns: each user message with the replies that follow it."""
        turns: list[list[Message]] = []
        for message in self.messages:
            if message.role == "user" or not turns:
                turns.append([])
            turns[-1].append(message)
        return turns

    def without_oldest_turns(self, count: int) -> Conversation:
        kept = [message for turn in self.turns()[count:] for message in turn]
        return Conversation(self.system_prompt, kept)


def to_chat_messages(conversation: Conversation) -> tuple[list[dict], list[PIL.Image.Image]]:
    """The conversation in the Hugging Face chat format, and its images in the order of their
    `{"type": "image"}` placeholders (the order processors expect them in)."""
    chat: list[dict] = []
    if conversation.system_prompt:
        chat.append({"role": "system", "content": [{"type": "text", "text": conversation.system_prompt}]})
    images: list[PIL.Image.Image] = []
    for message in conversation.messages:
        content = []
        for part in message.parts:
            if isinstance(part, Image):
                content.append({"type": "image"})
                images.append(part.image)
            elif isinstance(part, Text):
                content.append({"type": "text", "text": part.text})
            else:
                raise AssistantError("this voice message has not been transcribed; speech input is not set up")
        chat.append({"role": message.role, "content": content})
    return chat, images


class Measured(Protocol):
    prompt_tokens: int
    image_tokens: int


M = TypeVar("M", bound=Measured)


def fit_to_context(conversation: Conversation, encode: Callable[[Conversation], M], limit: int) -> tuple[M, int]:
    """Encode the conversation, dropping its oldest turns until the prompt is at most `limit`
    tokens (image tokens included). The system prompt and the newest turn are never dropped.

    Returns the encoding that fits and how many turns were dropped. Dropping more turns never
    makes the prompt longer, so the smallest number of dropped turns is found by bisection.
    """
    encoded = encode(conversation)
    if encoded.prompt_tokens <= limit:
        return encoded, 0
    most = len(conversation.turns()) - 1
    smallest = encode(conversation.without_oldest_turns(most))
    if smallest.prompt_tokens > limit:
        raise ContextOverflowError(_overflow_message(smallest, limit))
    fits = {most: smallest}
    low, high = 1, most  # invariant: dropping `high` fits; dropping `low - 1` does not
    while low < high:
        middle = (low + high) // 2
        candidate = encode(conversation.without_oldest_turns(middle))
        if candidate.prompt_tokens <= limit:
            high, fits[middle] = middle, candidate
        else:
            low = middle + 1
    return fits[high], high


def _overflow_message(encoded: Measured, limit: int) -> str:
    images = f", {encoded.image_tokens} of them for images" if encoded.image_tokens else ""
    return (
        f"the message is too long for the model: it needs {encoded.prompt_tokens} tokens{images}, "
        f"but only {limit} fit with room for the reply. Send fewer or smaller photos, shorter text, "
        f"or lower max_new_tokens."
    )
