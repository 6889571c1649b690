"""The assistant as the browser chat, the HTTP API and the command line see it: settings, a model
behind an engine, speech in and out (`Voice`), personas and media limits. The faces only translate
their types into these calls.

The faces import from here, `events`, `errors` and `settings`, and from nowhere else in the package
(tests/unit/test_layers.py holds that rule): the types they handle are re-exported below, so the
modules behind them can change without the faces noticing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import history
from .conversation import DETAILS, Conversation, Detail, Image, Message, Text
from .engine import Engine, Reply
from .errors import AssistantError, MediaError, SpeechError
from .fetch import fetch_image_url, parse_hosts
from .media import ImageLimits, decode_image, read_image_file
from .models import ChatModel, load_model
from .personas import Persona, available_personas, load_persona
from .profiles import PROFILE_NAMES
from .sampling import GenerationOptions
from .settings import Settings
from .speech.audio import SAMPLE_RATE
from .speech.call import CallListener, CallTurn
from .speech.live import Heard, LiveTranscription
from .speech.synthesizer import SPEECH_FORMATS, Speech, encode_speech
from .speech.transcriber import Transcript
from .speech.writers import MEDIA_TYPES as TRANSCRIPT_MEDIA_TYPES
from .speech.writers import write_transcript
from .threads import reserve_for_model
from .training import (  # the seed's pipeline, for the command line's train and eval
    COLOUR_LAYOUTS,
    TrainConfig,
    evaluate,
    load_dataset,
    make_split,
    scenes_to_examples,
    train,
)
from .voice import Voice

__all__ = [  # what the faces use, beside Assistant itself
    "COLOUR_LAYOUTS",
    "CallListener",
    "CallTurn",
    "DETAILS",
    "PROFILE_NAMES",
    "SAMPLE_RATE",
    "SPEECH_FORMATS",
    "TRANSCRIPT_MEDIA_TYPES",
    "Conversation",
    "Detail",
    "Heard",
    "Image",
    "LiveTranscription",
    "Message",
    "Reply",
    "Speech",
    "Text",
    "TrainConfig",
    "Transcript",
    "Voice",
    "encode_speech",
    "evaluate",
    "load_dataset",
    "make_split",
    "scenes_to_examples",
    "train",
    "write_transcript",
]

NO_SPEECH = "no speech detected in the recording; try again, closer to the microphone"


@dataclass
class Assistant:
    """One settings object's assistant: its model behind an engine, its voice, personas and limits.
    `Assistant.from_settings` loads the model; tests build one around an engine of their own."""

    settings: Settings
    engine: Engine
    voice: Voice | None = None  # speech in and out, loaded on first use (None: made from the settings)

    def __post_init__(self) -> None:
        if self.voice is None:
            self.voice = Voice(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings, load_speech: bool = False) -> Assistant:
        """Load the model the settings name; with `load_speech`, the speech model too, beside it
        (Voice.load_in_background), where a server would load it soon after anyway."""
        load_persona(settings.persona, settings.prompts_dir)  # a wrong persona fails before a long load
        voice = Voice(settings)
        if load_speech:
            voice.load_in_background()
        if settings.backend == "openai":
            from .remote import load_remote  # the openai client's import is a quarter second of every start

            model, workers = load_remote(settings), settings.remote_concurrency
        else:
            reserve_for_model()  # this thread loads; the engine's worker computes (see threads.py)
            model, workers = load_model(settings), 1
        engine = Engine(model, queue_size=settings.queue_size, workers=workers, max_batch=settings.max_batch)
        return cls(settings, engine, voice)

    @property
    def model(self) -> ChatModel:
        return self.engine.model

    def personas(self) -> dict[str, Persona]:
        return available_personas(self.settings.prompts_dir)

    def new_conversation(self, persona: str | None = None) -> Conversation:
        chosen = load_persona(persona or self.settings.persona, self.settings.prompts_dir)
        return Conversation(system_prompt=chosen.system_prompt)

    # --- a user's message, from what each face receives

    def user_message(
        self,
        text: str,
        image_paths: Iterable[str | os.PathLike] = (),
        audio_paths: Iterable[str | os.PathLike] = (),
        language_hint: str | None = None,
        heard: Heard | None = None,
        detail: Detail | None = None,
    ) -> Message:
        """A user message from typed text, image files and voice recordings. Each file is validated
        against the limits; each recording is transcribed and becomes the user's words.
        `language_hint`: the language the person last spoke in this conversation. `heard`: a
        recording already transcribed live, whose words come first. `detail`: how much of the photos
        the model sees (default: the settings' image_detail)."""
        image_paths = list(image_paths)
        self._check_image_count(len(image_paths))
        images = self._read_images(image_paths, detail)
        recordings = [self.voice.read_recording(path) for path in audio_paths]
        return self._compose(text, images, recordings, language_hint, heard)

    def prepare_photos(self, image_paths: Iterable[str | os.PathLike], detail: Detail | None = None) -> bool:
        """Start on photos attached to a message not yet sent (the person is typing its question), so
        that its answer begins sooner; whether that was started. A photo that cannot be read is left
        for the message itself to report."""
        image_paths = list(image_paths)
        if not image_paths or len(image_paths) > self.settings.max_images_per_message:
            return False
        try:
            images = self._read_images(image_paths, detail)
        except AssistantError:
            return False
        return self.engine.prepare(images)

    def _read_images(self, image_paths: list, detail: Detail | None) -> list[Image]:
        """Image files read within the limits, at `detail` (default: the settings' image_detail)."""
        limits = ImageLimits.from_settings(self.settings)
        detail = detail or self.settings.image_detail
        return [
            Image(read_image_file(path, limits), name=os.path.basename(path), detail=detail) for path in image_paths
        ]

    def user_message_from_bytes(
        self,
        text: str,
        images: Iterable[bytes] = (),
        recordings: Iterable[bytes] = (),
        details: Sequence[Detail | None] = (),
    ) -> Message:
        """The same from media received as bytes (the HTTP API): validated, decoded, transcribed.
        `details`: each image's detail level, in order (missing or None: the settings' image_detail)."""
        images = list(images)
        self._check_image_count(len(images))
        limits = ImageLimits.from_settings(self.settings)
        details = [*details, *[None] * (len(images) - len(details))]
        decoded = [
            Image(decode_image(data, limits), detail=detail or self.settings.image_detail)
            for data, detail in zip(images, details)
        ]
        return self._compose(text, decoded, [self.voice.decode_recording(data) for data in recordings])

    def fetch_image(self, url: str) -> bytes:
        """An image from an http(s) URL a client gave (public hosts only, or those the settings allow)."""
        settings = self.settings
        hosts = parse_hosts(settings.image_url_hosts)
        return fetch_image_url(url, hosts, settings.image_url_timeout_s, settings.max_image_bytes)

    def _compose(
        self,
        text: str,
        images: list[Image],
        recordings: list[np.ndarray],
        language_hint: str | None = None,
        heard: Heard | None = None,
    ) -> Message:
        spoken, language = [], language_hint
        if heard is not None and heard.text:
            spoken.append(heard.text)
            language = heard.language
        for samples in recordings:
            transcript = self.voice.transcribe(samples, language_hint=language)
            if transcript.has_speech:
                spoken.append(transcript.text)
                language = transcript.language  # the next recording is likely in the same language
        if not text.strip() and not images and not spoken:
            if recordings or heard is not None:
                raise SpeechError(NO_SPEECH)
            raise AssistantError("the message is empty: type a question or attach a photo")
        return Message.user(text.strip(), images, spoken=spoken, spoken_language=language if spoken else None)

    def _check_image_count(self, count: int) -> None:
        if count > self.settings.max_images_per_message:
            raise MediaError(f"{count} images in one message; the limit is {self.settings.max_images_per_message}")

    # --- answering

    def reply(self, conversation: Conversation, **overrides) -> Reply:
        """Start the reply to the conversation's last user message; `overrides` are GenerationOptions
        fields (None keeps the settings' default)."""
        return self.engine.reply(conversation, GenerationOptions.from_settings(self.settings, **overrides))

    # --- conversations saved and read back

    def export_conversation(self, conversation: Conversation, kind: str) -> str:
        """ "json" (photos inside; can be imported again) or "markdown" (to read)."""
        return history.to_json(conversation) if kind == "json" else history.to_markdown(conversation)

    def import_conversation(self, data: bytes) -> Conversation:
        """A conversation exported as JSON, checked like any upload (its photos against the limits)."""
        return history.from_json(data, ImageLimits.from_settings(self.settings))

    def close(self) -> None:
        self.engine.close()
