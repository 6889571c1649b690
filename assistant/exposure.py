"""Who may reach the app: loopback by default; anything reachable from other machines (another
address, or a public --share link) needs a user name and password unless the user insists, and the
API its own key. Kept apart from the UI so that the rules are checked before Gradio is imported."""

from __future__ import annotations

import ipaddress
import logging

from .errors import SettingsError
from .settings import Settings

log = logging.getLogger(__name__)


def check_exposure(settings: Settings) -> tuple[str, str] | None:
    """The (user, password) to ask for, or None on loopback; refuses an open exposed server."""
    credentials = tuple(settings.auth.split(":", 1)) if settings.auth else None
    if _exposed(settings) and credentials is None:
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


def api_allowed(settings: Settings) -> bool:
    """The API has its own key; beyond loopback it needs one (or --insecure)."""
    return not _exposed(settings) or settings.api_key is not None or settings.insecure


def _exposed(settings: Settings) -> bool:
    """Whether the app is reachable from other machines (another address, or a public link)."""
    return settings.share or not is_loopback(settings.host)
