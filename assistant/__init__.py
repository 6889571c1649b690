"""A multimodal virtual assistant: text, photos and voice in, a streamed answer out.

The public face: settings, the conversation model, the engine and the model loader.
"""

from .conversation import Conversation, Image, Message, Text
from .engine import Engine, GenerationOptions
from .errors import AssistantError
from .settings import Settings, load_settings

__all__ = [
    "AssistantError",
    "Conversation",
    "Engine",
    "GenerationOptions",
    "Image",
    "Message",
    "Settings",
    "Text",
    "load_settings",
]
