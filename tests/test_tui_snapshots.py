"""Snapshots (pytest-textual-snapshot) pin the look of each screen at 80x24.

Deterministic by construction: fixed terminal size, fake checkpoints with fixed metadata and
sizes, no model loading, a fake model with fixed statistics, no timestamps, no blinking cursor,
nothing that depends on the machine (precision, CPU) or on earlier tests (each test has its own
data and config dirs; focus never rests on a button whose Enter would start a real run).
Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from test_tui_support import FakeChat, make_broken, make_fake, wait_until
from tui.app import MiniGPTApp
from tui.chat_widgets import ChatInput

SIZE = (80, 24)


@pytest.fixture
def fixed_store(fresh_dirs, monkeypatch):
    from engine import checkpoints
    from engine.checkpoints import CheckpointStore

    monkeypatch.setattr(checkpoints, "hf_cache_models", lambda: [])
    store = CheckpointStore()
    store.root.mkdir(parents=True)
    make_fake(store, "bible-tiny")
    make_fake(
        store, "wiki-seed", preset="seed", params=7_100_000, dataset="wikitext (wikitext-2-raw-v1)", steps=600,
        val_loss=4.1234, perplexity=61.8, bits_per_byte=1.532, created="2026-01-03T10:00:00+00:00",
    )
    make_broken(store, "half-written")
    return store


async def _settle(pilot) -> None:
    """Workers done, and no cursor blinking: a blinking cursor is drawn or not depending on
    the moment of the screenshot (0.5 s phases), which made these snapshots flaky."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for widget in pilot.app.screen.query("Input, TextArea"):
        widget.cursor_blink = False
    await pilot.pause()
    await pilot.pause()


def test_snapshot_first_run_chat(fresh_dirs, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 5, "focus on the chat input")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_chat_conversation(fresh_dirs, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        app.chat_model, app.active_name, app.model_status = FakeChat(["Once ", "upon ", "[bold]a[/bold] ", "time."]), "wiki-seed", "ready"
        chat = app.views["chat"]
        for text in ("Tell me a story", "Go on\nplease"):
            inp = chat.query_one("#chat-input")
            inp.load_text(text)
            await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
            await pilot.press("enter")
            await wait_until(pilot, lambda: chat.reply is None, 10, "reply")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_training_form(fresh_dirs, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f2")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_checkpoint_picker(fixed_store, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f3")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_sampling_dialog(fresh_dirs, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f4")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_light_theme_training(fresh_dirs, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f7")  # light theme
        await pilot.press("f2")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)
