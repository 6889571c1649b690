"""Fetching an image URL that a client sent, when the server allows it (off by default).

A URL from a client is an invitation to make the server call somewhere it should not (the cloud
metadata address, the admin page on localhost), so: http(s) only, the host must be on the allow-list
when there is one, every address it resolves to must be public, redirects are not followed, and the
download has a time-out and a size cap.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from .errors import MediaError, MediaTooLargeError
from .media import too_big_message


class FetchError(MediaError):
    """The URL may not be fetched, or fetching it failed."""


def fetch_image_url(url: str, allowed_hosts: frozenset[str] | None, timeout_s: float, max_bytes: int) -> bytes:
    """The bytes at `url`, or a FetchError / MediaTooLargeError that says why not."""
    host = _checked_host(url, allowed_hosts)
    _refuse_private_addresses(host)
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
            if response.is_redirect:
                raise FetchError(f"{url} redirects elsewhere; give the final address of the image")
            if response.status_code != 200:
                raise FetchError(f"{url} answered HTTP {response.status_code}")
            return _read_capped(response, max_bytes)
    except httpx.TimeoutException:
        raise FetchError(f"{url} did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as error:
        raise FetchError(f"could not fetch {url}: {error}") from None


def parse_hosts(text: str | None) -> frozenset[str] | None:
    """The `image_url_hosts` setting: comma-separated names, None for any public host."""
    if not text:
        return None
    return frozenset(host.strip().lower() for host in text.split(",") if host.strip())


def _checked_host(url: str, allowed_hosts: frozenset[str] | None) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http(s) image URLs can be fetched, not {url[:80]!r}")
    host = parts.hostname.lower()
    if allowed_hosts is not None and host not in allowed_hosts:
        raise FetchError(
            f"images from {host} are not allowed; the allowed hosts are: {', '.join(sorted(allowed_hosts))}"
        )
    return host


def _refuse_private_addresses(host: str) -> None:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise FetchError(f"the image host {host} cannot be resolved") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise FetchError(f"the image host {host} is a private or local address ({ip}); it may not be fetched")


def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaTooLargeError(too_big_message(int(declared), max_bytes))
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise MediaTooLargeError(too_big_message(len(data), max_bytes))
    return bytes(data)
