"""Model loading: one entry point, `load_model(settings)`, for every kind of model."""

from .base import Encoded, LoadedModel
from .loader import load_model, load_pretrained

__all__ = ["Encoded", "LoadedModel", "load_model", "load_pretrained"]
