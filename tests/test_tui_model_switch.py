"""Switching models: a newer choice wins over a load still under way (exclusive model workers)."""

from __future__ import annotations

import threading

import pytest

from engine.generation.chat_model import ChatModel
from test_tui_support import anyio_backend, copy_checkpoint, home_with, wait_until  # noqa: F401
from tui.app import MiniGPTApp

pytestmark = pytest.mark.anyio


async def test_the_newer_choice_wins_and_the_older_load_is_never_used(tiny_checkpoint, isolated_dirs, fresh_dirs, monkeypatch):
    """The first load is held (a real load, gated at its start) until the second choice is made
    and ready; then it finishes and its ModelReady arrives last: the app must not use it."""
    store = home_with(tiny_checkpoint, isolated_dirs)
    copy_checkpoint(store, tiny_checkpoint, "first")
    started, release = threading.Event(), threading.Event()
    real_load = ChatModel.from_checkpoint.__func__

    def gated_load(cls, ref, *args, **kwargs):
        if ref == "first":
            started.set()
            release.wait(60)
        return real_load(cls, ref, *args, **kwargs)

    monkeypatch.setattr(ChatModel, "from_checkpoint", classmethod(gated_load))
    handled: list[str] = []  # every ModelReady the app handled, by model name
    real_ready = MiniGPTApp.on_model_ready

    def spy_ready(self, message):
        handled.append(message.model.name)
        real_ready(self, message)

    monkeypatch.setattr(MiniGPTApp, "on_model_ready", spy_ready)
    app = MiniGPTApp(autoload=False)
    seen: list[str | None] = []
    async with app.run_test(size=(80, 24)) as pilot:
        app.watch(app, "model_revision", lambda _r: seen.append(app.chat_model.name if app.chat_model else None), init=False)
        app.activate_checkpoint("first")
        await wait_until(pilot, started.is_set, 30, "the first load to start")
        app.activate_checkpoint(tiny_checkpoint)  # while the first load is under way
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the second model")
        release.set()
        await wait_until(pilot, lambda: "first" in handled, 120, "the first load's ModelReady")
        await pilot.pause()
        assert handled == [tiny_checkpoint, "first"]  # the superseded load's result came last...
        assert app.chat_model.name == tiny_checkpoint and app.active_name == tiny_checkpoint  # ...and went unused
        assert "first" not in seen, seen
        assert app.model_status == "ready"
