"""A multimodal virtual assistant: text, photos and voice in, a streamed answer out.

The public face: settings, the conversation model, the engine and the model loader.
"""

import logging

# transformers imports torchao (our int8 decode) whenever it is installed, and torchao registers enums
# with torch.compile in a way torch 2.14 warns about at every start; nothing is wrong for our use.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# torch.compile on a CPU-only machine says it found no CUDA runtime, which is expected.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

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
