"""Is the Hugging Face Hub reachable?  Asked once, quickly, the way the hub client itself would.

Without this check an offline machine spends ~50 s in the hub client's retries before a
load fails.  The probe is one HTTP request to ``huggingface_hub``'s own endpoint
(``HF_ENDPOINT``) through its own HTTP session, so proxies (``HTTPS_PROXY``/``HTTP_PROXY``)
and the client's other settings apply; ``HF_HUB_OFFLINE=1`` (or ``MINIGPT_OFFLINE=1``) answers
"no" without a probe.  ``hub_status()`` also says which check failed, for the user.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "MINIGPT_OFFLINE")


@dataclass(frozen=True)
class HubStatus:
    reachable: bool
    reason: str  # why not (empty when reachable): which setting or which request failed


def offline_forced() -> bool:
    return _offline_var() is not None


def _offline_var() -> str | None:
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def _proxy_note() -> str:
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        if os.environ.get(var):
            return f" through proxy {var}={os.environ[var]}"
    return ""


def probe(timeout: float = 3.0) -> HubStatus:
    """One request to the hub's endpoint with huggingface_hub's session (no caching, no side effects)."""
    var = _offline_var()
    if var is not None:
        return HubStatus(False, f"{var} is set")
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = constants.ENDPOINT.rstrip("/")
    try:
        # any HTTP answer means the hub (or the proxy in front of it) is there
        get_session().head(f"{endpoint}/api/models/gpt2", timeout=timeout, follow_redirects=False)
    except Exception as exc:  # the HTTP client's connect / proxy / TLS / timeout errors
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return HubStatus(False, f"no answer from {endpoint}{_proxy_note()}: {type(exc).__name__}: {detail}"[:300])
    return HubStatus(True, "")


@functools.lru_cache(maxsize=1)
def hub_status() -> HubStatus:
    """Probe the hub once per process; when it is out of reach, switch the HF libraries to
    offline mode so that loads from the local cache do not sit in network retries."""
    status = probe()
    if not status.reachable:
        _go_offline()
    return status


def hub_reachable() -> bool:
    return hub_status().reachable


def unreachable_note() -> str:
    """'Hugging Face Hub not reachable (why)' for notices."""
    return f"Hugging Face Hub not reachable ({hub_status().reason})"


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
