"""Is the Hugging Face Hub reachable?  Asked once, quickly.

Without this check an offline machine spends ~50 s in the hub client's retries before a
load fails.  ``HF_HUB_OFFLINE=1`` (or ``MINIGPT_OFFLINE=1``) answers "no" without a probe.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def offline_forced() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "MINIGPT_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Probe the hub once; when it is out of reach, switch the HF libraries to offline mode so
    that loads from the local cache do not sit in network retries."""
    if offline_forced():
        _go_offline()
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        _go_offline()
        return False


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import sys

    # the libraries read these at import time; already-imported ones are told directly
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None:
        ds_config.HF_HUB_OFFLINE = True
        if hasattr(ds_config, "HF_DATASETS_OFFLINE"):
            ds_config.HF_DATASETS_OFFLINE = True
