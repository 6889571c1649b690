"""The assistant as the UI, the CLI and the HTTP API see it: settings, a loaded model behind an
engine, personas and media limits. Front ends only translate their types into these calls."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .conversation import Conversation, Image, Message
from .engine import Engine, Reply
from .errors import AssistantError, MediaError
from .media import ImageLimits, read_image_file
from .models import LoadedModel, load_model
from .personas import Persona, available_personas, load_persona
from .sampling import GenerationOptions
from .settings import Settings


@dataclass
class Assistant:
    settings: Settings
    engine: Engine

    @classmethod
    def from_settings(cls, settings: Settings) -> Assistant:
        load_persona(settings.persona, settings.prompts_dir)  # a wrong persona fails before a long load
        return cls(settings, Engine(load_model(settings), queue_size=settings.queue_size))

    @property
    def model(self) -> LoadedModel:
        return self.engine.model

    def personas(self) -> dict[str, Persona]:
        return available_personas(self.settings.prompts_dir)

    def new_conversation(self, persona: str | None = None) -> Conversation:
        chosen = load_persona(persona or self.settings.persona, self.settings.prompts_dir)
        return Conversation(system_prompt=chosen.system_prompt)

    def user_message(self, text: str, image_paths: Iterable[str | os.PathLike] = ()) -> Message:
        """A user message from text and image files, each image validated against the limits."""
        paths = list(image_paths)
        if len(paths) > self.settings.max_images_per_message:
            raise MediaError(
                f"{len(paths)} images in one message; the limit is {self.settings.max_images_per_message}"
            )
        limits = ImageLimits.from_settings(self.settings)
        images = [Image(read_image_file(path, limits), name=os.path.basename(path)) for path in paths]
        if not text.strip() and not images:
            raise AssistantError("the message is empty: type a question or attach a photo")
        return Message.user(text.strip(), images)

    def reply(self, conversation: Conversation, **overrides) -> Reply:
        """Start the reply to the conversation's last user message; `overrides` are GenerationOptions
        fields (None keeps the settings' default)."""
        return self.engine.reply(conversation, GenerationOptions.from_settings(self.settings, **overrides))

    def close(self) -> None:
        self.engine.close()
