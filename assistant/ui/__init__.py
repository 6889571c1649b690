"""The browser chat: `build_app(assistant)` makes the page, `launch(assistant)` serves it."""

from .layout import build_app
from .serve import launch

__all__ = ["build_app", "launch"]
