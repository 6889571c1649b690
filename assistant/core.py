"""The assistant as the UI, the CLI and the HTTP API see it: settings, a loaded model behind an
engine, speech, personas and media limits. Front ends only translate their types into these calls."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .conversation import Conversation, Image, Message
from .engine import Engine, Reply
from .errors import AssistantError, MediaError
from .media import ImageLimits, read_image_file
from .models import LoadedModel, load_model
from .personas import Persona, available_personas, load_persona
from .sampling import GenerationOptions
from .settings import Settings
from .speech import SpeechError, Transcriber, Transcript, load_speech, transcribe_options
from .speech.audio import AudioLimits, read_audio_file


@dataclass
class Assistant:
    settings: Settings
    engine: Engine
    _transcriber: Transcriber | None = None
    _speech_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Assistant:
        load_persona(settings.persona, settings.prompts_dir)  # a wrong persona fails before a long load
        return cls(settings, Engine(load_model(settings), queue_size=settings.queue_size))

    @property
    def model(self) -> LoadedModel:
        return self.engine.model

    @property
    def transcriber(self) -> Transcriber:
        """The speech model, loaded on first use (text-only users never pay for it)."""
        with self._speech_lock:
            if self._transcriber is None:
                self._transcriber = load_speech(self.settings)
            return self._transcriber

    def personas(self) -> dict[str, Persona]:
        return available_personas(self.settings.prompts_dir)

    def new_conversation(self, persona: str | None = None) -> Conversation:
        chosen = load_persona(persona or self.settings.persona, self.settings.prompts_dir)
        return Conversation(system_prompt=chosen.system_prompt)

    def transcribe(self, samples: np.ndarray, **overrides) -> Transcript:
        """Transcribe 16 kHz mono samples; `overrides`: language, translate, timestamps."""
        return self.transcriber.transcribe(samples, transcribe_options(self.settings, **overrides))

    def user_message(
        self,
        text: str,
        image_paths: Iterable[str | os.PathLike] = (),
        audio_paths: Iterable[str | os.PathLike] = (),
    ) -> Message:
        """A user message from typed text, image files and voice recordings. Each file is validated
        against the limits; each recording is transcribed and becomes the user's words."""
        images = self._read_images(list(image_paths))
        recordings = list(audio_paths)
        spoken = [words for words in map(self._hear, recordings) if words]
        if not text.strip() and not images and not spoken:
            if recordings:
                raise SpeechError("no speech detected in the recording; try again, closer to the microphone")
            raise AssistantError("the message is empty: type a question or attach a photo")
        return Message.user(text.strip(), images, spoken=spoken)

    def reply(self, conversation: Conversation, **overrides) -> Reply:
        """Start the reply to the conversation's last user message; `overrides` are GenerationOptions
        fields (None keeps the settings' default)."""
        return self.engine.reply(conversation, GenerationOptions.from_settings(self.settings, **overrides))

    def close(self) -> None:
        self.engine.close()

    def _read_images(self, paths: list) -> list[Image]:
        if len(paths) > self.settings.max_images_per_message:
            raise MediaError(f"{len(paths)} images in one message; the limit is {self.settings.max_images_per_message}")
        limits = ImageLimits.from_settings(self.settings)
        return [Image(read_image_file(path, limits), name=os.path.basename(path)) for path in paths]

    def _hear(self, path: str | os.PathLike) -> str:
        samples = read_audio_file(path, AudioLimits.from_settings(self.settings))
        return self.transcribe(samples).text
