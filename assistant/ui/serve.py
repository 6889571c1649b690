"""Serving the chat safely: loopback by default; anything reachable from other machines (another
address, or a public --share link) needs a user name and password unless the user insists."""

from __future__ import annotations

import ipaddress
import logging

from ..api import build_api
from ..core import Assistant
from ..errors import SettingsError
from ..settings import Settings
from .layout import build_app

log = logging.getLogger(__name__)


def check_exposure(settings: Settings) -> tuple[str, str] | None:
    """The (user, password) to ask for, or None on loopback; refuses an open exposed server."""
    credentials = tuple(settings.auth.split(":", 1)) if settings.auth else None
    exposed = settings.share or not is_loopback(settings.host)
    if exposed and credentials is None:
        if not settings.insecure:
            where = "a public --share link" if settings.share else f"{settings.host} (reachable from other machines)"
            raise SettingsError(
                f"refusing to serve the chat on {where} without a password: give --auth USER:PASSWORD "
                "(or set ASSISTANT_AUTH), or --insecure to allow anyone who can reach it"
            )
        log.warning("serving on %s with no password (--insecure): anyone who can reach it can use it", settings.host)
    return credentials


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


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


def api_allowed(settings: Settings) -> bool:
    """The API has its own key; beyond loopback it needs one (or --insecure)."""
    exposed = settings.share or not is_loopback(settings.host)
    return not exposed or settings.api_key is not None or settings.insecure
