"""The Hugging Face hub as every loader meets it: whether a model can be had right now (cached, or
downloadable), whether a name is a local path or a hub id, and what to say when a model can't be had."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, try_to_load_from_cache

REACHABILITY_TIMEOUT_S = 5.0  # a slow hub should not hold up start-up: the offline model is ready


def hub_model_available(source: str) -> tuple[bool, str]:
    """(True, how) when `source` is a local directory, in the local cache, or on a reachable hub;
    else (False, why not), without downloading anything."""
    if Path(source).expanduser().is_dir():
        return True, "is a local directory"
    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return True, "is in the local Hugging Face cache"
    if is_offline():
        return False, "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        HfApi().model_info(source, timeout=REACHABILITY_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 -- DNS, proxy, TLS, HTTP: any of them means "not reachable"
        return False, f"is not cached and the hub cannot be reached ({type(error).__name__}: {error})"
    return True, "will be downloaded from the Hugging Face hub"


def is_offline() -> bool:
    """HF_HUB_OFFLINE is set: the hub is not asked for anything."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def is_path(name: str) -> bool:
    """Whether a model name is meant as a path on disk rather than a hub id ("org/name") or a size."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def unavailable_message(what: str, source: str, error: OSError, instead: str) -> str:
    """Why `what` ("model", "speech model", ...) `source`, a local directory or a hub id, could not be
    loaded, ending with what to do `instead`."""
    if Path(source).expanduser().is_dir():
        return f"could not load the {what} in {source}: {error}"
    return (
        f"{what} {source!r} is not in the local Hugging Face cache and could not be downloaded "
        f"({why_not_downloaded()}). {instead}"
    )


def why_not_downloaded() -> str:
    return "HF_HUB_OFFLINE is set" if is_offline() else "the Hugging Face hub could not be reached or has no such model"
