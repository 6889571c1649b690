"""Whether a Hugging Face hub model can be had right now: cached, or downloadable."""

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
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False, "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        HfApi().model_info(source, timeout=REACHABILITY_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 -- DNS, proxy, TLS, HTTP: any of them means "not reachable"
        return False, f"is not cached and the hub cannot be reached ({type(error).__name__}: {error})"
    return True, "will be downloaded from the Hugging Face hub"
