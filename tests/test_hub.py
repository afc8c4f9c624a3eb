"""The hub probe goes through huggingface_hub's own configuration (endpoint, proxies, offline
switch) and says which check failed.  Real HTTP servers on localhost; a fresh process per probe,
since huggingface_hub reads its settings at import time."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT

PROBE = "import json; from engine.hub import probe; s = probe(5.0); print(json.dumps([s.reachable, s.reason]))"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_HEAD(self):  # noqa: N802  (http.server's naming)
        type(self).seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_GET = do_HEAD  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Recorder,), {"seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.seen
    httpd.shutdown()


def _probe(**env_changes) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "MINIGPT_OFFLINE", "HF_ENDPOINT") and "proxy" not in k.lower()}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    reachable, reason = json.loads(r.stdout)
    return reachable, reason


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_uses_hf_endpoint(server):
    url, seen = server
    assert _probe(HF_ENDPOINT=url) == (True, "")
    assert seen and seen[0].startswith("/api/")


def test_probe_goes_through_the_proxy(server):
    """The endpoint's name does not resolve here: only a probe that uses HTTP(S)_PROXY reaches it."""
    proxy, seen = server
    reachable, reason = _probe(HF_ENDPOINT="http://hub.invalid", HTTP_PROXY=proxy, NO_PROXY="")
    assert (reachable, reason) == (True, "")
    assert seen and seen[0].startswith("http://hub.invalid/api/")  # a proxy request: the full URL


def test_unreachable_probe_says_which_check_failed():
    port = _closed_port()
    reachable, reason = _probe(HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert not reachable and f"no answer from http://127.0.0.1:{port}" in reason
    reachable, reason = _probe(HF_ENDPOINT="http://hub.invalid", HTTP_PROXY=f"http://127.0.0.1:{port}", NO_PROXY="")
    assert not reachable and "through proxy HTTP_PROXY=" in reason
    assert _probe(HF_HUB_OFFLINE="1") == (False, "HF_HUB_OFFLINE is set")


def test_offline_notice_names_the_reason(fresh_dirs, monkeypatch):
    from engine import hub
    from engine.data import sources as data

    hub.hub_status.cache_clear()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("MINIGPT_OFFLINE", "1")
    notes: list[str] = []
    try:
        source = data.resolve(None, None, notes.append)
    finally:
        hub.hub_status.cache_clear()
    assert source.name.lower().startswith("builtin") or "bible" in source.name.lower()
    assert notes == ["Hugging Face Hub not reachable (MINIGPT_OFFLINE is set): training on the built-in corpus (King James Bible) instead of WikiText-2"]
