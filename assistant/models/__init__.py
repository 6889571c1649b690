"""Models behind the engine: the contract (base.py), one loader entry point (`load_model(settings)`)
for every kind of local model, and the transformers implementation (local.py, composed.py)."""

from .base import ChatModel, Encoded, ReplyRequest
from .loader import load_model, load_pretrained
from .local import LocalModel

__all__ = ["ChatModel", "Encoded", "LocalModel", "ReplyRequest", "load_model", "load_pretrained"]
