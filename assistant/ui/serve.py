"""Serving the chat and the API on one port, as the exposure rules (assistant/exposure.py) allow."""

from __future__ import annotations

import logging

from ..api import build_api
from ..core import Assistant
from ..exposure import api_allowed, check_exposure
from .layout import build_app

log = logging.getLogger(__name__)


def launch(assistant: Assistant, **overrides):
    """Serve the chat and the OpenAI-compatible API on one port, as the settings say (blocking
    unless `prevent_thread_lock=True` is passed)."""
    settings = assistant.settings
    credentials = check_exposure(settings)
    if settings.speech_warm_start:
        assistant.voice.warm_up(idle=lambda: assistant.engine.idle)
    app = build_app(assistant)
    # The queue's limit is what the page reports as "full"; behind it, the engine runs one reply at a time.
    app.queue(max_size=settings.queue_size, default_concurrency_limit=settings.queue_size)
    options = {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "auth": credentials,
        # Gradio refuses bigger uploads in the browser and on the server; the core checks each kind.
        "max_file_size": max(settings.max_image_bytes, settings.max_audio_bytes),
        "show_error": False,
    }
    if api_allowed(settings):
        # Given to the server as it is made: added after `launch`, the routes answered 404 to a client
        # that came as soon as the port opened.
        options["app_kwargs"] = {"routes": list(build_api(assistant).routes)}
    else:
        log.warning("the HTTP API is off: it is reachable from other machines, so set ASSISTANT_API_KEY to turn it on")
    blocking = not overrides.pop("prevent_thread_lock", False)
    try:
        app.launch(**{**options, **overrides}, prevent_thread_lock=True)
    except KeyboardInterrupt:  # a stop (Ctrl-C, SIGTERM) after the server started and before it served
        app.close()
        raise
    if blocking:
        app.block_thread()
    return app
