"""Switching models: a newer choice wins over a load still under way (exclusive model workers)."""

from __future__ import annotations

import pytest

from test_tui_support import anyio_backend, copy_checkpoint, home_with, wait_until  # noqa: F401
from tui.app import MiniGPTApp

pytestmark = pytest.mark.anyio


async def test_the_newer_choice_wins_and_the_older_load_is_never_used(tiny_checkpoint, isolated_dirs, fresh_dirs):
    store = home_with(tiny_checkpoint, isolated_dirs)
    copy_checkpoint(store, tiny_checkpoint, "first")
    app = MiniGPTApp(autoload=False)
    seen: list[str | None] = []
    async with app.run_test(size=(80, 24)) as pilot:
        app.watch(app, "model_revision", lambda _r: seen.append(app.chat_model.name if app.chat_model else None), init=False)
        app.activate_checkpoint("first")
        app.activate_checkpoint(tiny_checkpoint)  # before the first load can finish
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the second model")
        await app.workers.wait_for_complete()  # both loads (and the warm-up) have ended
        await pilot.pause()
        assert app.chat_model.name == tiny_checkpoint and app.active_name == tiny_checkpoint
        assert "first" not in seen, seen  # the superseded load never became the chat's model
        assert app.model_status == "ready"
