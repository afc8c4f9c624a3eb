"""The app's two real decode paths under the user's keys, driven with Pilot against the session's
real tiny checkpoint: on a thread in the app's process (MINIGPT_DECODE_PROCESS=0) and in the
child process the app uses by default (MINIGPT_DECODE_PROCESS=1, engine/generation/decode_process.py).
Esc stops a streaming reply on both; deleting the active checkpoint from F3 ends its decode child."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from textual.widgets import DataTable

from engine.store.settings import Sampling
from test_decode_process import _alive, _wait_gone
from test_tui_support import anyio_backend, ckpt_home, plain, wait_until  # noqa: F401  (fixtures)
from tui.app import MiniGPTApp
from tui.screens.dialogs import ConfirmScreen
from tui.widgets.turns import ChatInput, TurnView

pytestmark = pytest.mark.anyio

# Greedy with no penalty: the tiny model settles into a loop that never holds the end token,
# so only the token limit (far away) or the user's Esc can end this reply.
ENDLESS = Sampling(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=100_000, seed=1)
SHORT = replace(ENDLESS, max_new_tokens=8)


def _status(app) -> str:
    return plain(app.views["chat"].query_one("#chat-status"))


async def _ready_on(pilot, app, in_child: bool) -> None:
    """The model is loaded and the fast path warmed up, in the child process or here."""
    await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model to load")
    if in_child:
        await wait_until(pilot, lambda: "fast decode (process)" in _status(app), 120, "the decode process")
        assert app.chat_model.in_child_process
    else:
        await wait_until(pilot, lambda: "fast decode" in _status(app), 120, "the fast path")
        assert not app.chat_model.in_child_process and "(process)" not in _status(app)


async def _send(pilot, text: str) -> None:
    inp = pilot.app.views["chat"].query_one(ChatInput)
    inp.focus()
    inp.load_text(text)
    await wait_until(pilot, lambda: pilot.app.focused is inp, 5, "focus on the input")
    await pilot.press("enter")


# (the child process loads torch and the model again: several seconds, so -m slow)
@pytest.mark.parametrize("in_child", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["thread", "process"])
async def test_escape_stops_a_real_reply_and_the_next_message_gets_one(ckpt_home, tiny_checkpoint, monkeypatch, in_child):
    from engine.generation.decode_process import DecodeProcess

    monkeypatch.setenv("MINIGPT_DECODE_PROCESS", "1" if in_child else "0")
    child_replies = []  # replies the child decoded (passes every call through to the real one)
    real_stream = DecodeProcess.stream

    def counted(self, *args, **kwargs):
        child_replies.append(self.pid)
        yield from real_stream(self, *args, **kwargs)

    monkeypatch.setattr(DecodeProcess, "stream", counted)
    app = MiniGPTApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready_on(pilot, app, in_child)
        chat = app.views["chat"]
        app.settings = replace(app.settings, sampling=ENDLESS)
        await _send(pilot, "In the beginning")
        await wait_until(pilot, lambda: chat.reply is not None and len(chat.reply.text) >= 8, 60, "the reply to stream")
        await pilot.press("escape")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the reply to stop")
        stopped_view = list(app.screen.query(TurnView))[-1]
        shown = stopped_view.text
        assert stopped_view.stopped and "[stopped]" in plain(stopped_view)
        status = _status(app)
        tokens = int(re.search(r"(\d+) tok\b", status).group(1))
        assert "stopped" in status and "token limit" not in status, status
        assert 0 < tokens < ENDLESS.max_new_tokens  # cut short by the stop, not by the limit
        assert len(stopped_view.choices) == tokens  # one recorded token per token counted
        # the store keeps the partial reply as shown, marked stopped (README: "kept, marked stopped")
        conv = app.conversations.list()[0]
        stored = app.conversations.turns(conv.id)
        assert [t.role for t in stored] == ["user", "assistant"]
        assert stored[1].stopped and stored[1].content == shown and stored[1].checkpoint == tiny_checkpoint
        if in_child:
            assert child_replies == [app.chat_model._process.pid]
            assert app.chat_model.in_child_process and not app.chat_model._process.busy
        else:
            assert child_replies == []

        # the next message gets a whole reply, on the same path
        app.settings = replace(app.settings, sampling=SHORT)
        await _send(pilot, "And then")
        await wait_until(pilot, lambda: chat.reply is None and len(chat.turns) == 4, 60, "the next reply")
        nxt = list(app.screen.query(TurnView))[-1]
        assert nxt.text and not nxt.stopped and not nxt.error
        assert "stopped" not in _status(app) and "8 tok" in _status(app), _status(app)
        stored = app.conversations.turns(conv.id)
        assert [t.role for t in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[1].content == shown and stored[1].stopped  # the stopped reply never grew after the stop
        assert stopped_view.text == shown
        assert stored[3].content == nxt.text and not stored[3].stopped
        if in_child:
            assert len(child_replies) == 2 and app.chat_model.in_child_process


@pytest.mark.slow  # a decode child to start: several seconds
async def test_deleting_the_active_checkpoint_ends_its_decode_process(ckpt_home, tiny_checkpoint, monkeypatch):
    """F3, d, y on the checkpoint the chat is using (decoding in its child process): the child
    ends, the folder goes, the app says there is no model, and a message then is refused, not a crash."""
    monkeypatch.setenv("MINIGPT_DECODE_PROCESS", "1")
    app = MiniGPTApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready_on(pilot, app, in_child=True)
        pid = app.chat_model._process.pid
        assert _alive(pid)
        app.settings = replace(app.settings, sampling=SHORT)
        await _send(pilot, "In the beginning")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None and len(chat.turns) == 2, 60, "a reply")
        folder = ckpt_home.path(tiny_checkpoint)
        assert folder.is_dir()

        await pilot.press("f3")
        await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints") and app.screen.loaded, 10, "the picker")
        picker = app.screen
        table = picker.query_one("#ckpt-table", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index(tiny_checkpoint))
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10, "the confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.model_status == "none", 30, "the active model to go")
        assert _wait_gone(pid), f"the decode child {pid} outlived its deleted checkpoint"
        assert not folder.exists()
        await wait_until(pilot, lambda: table.row_count == 0, 10, "the picker to drop the row")
        assert app.chat_model is None and app.active_name is None
        from engine.store.settings import load_settings

        assert load_settings().active_checkpoint is None  # the next start does not look for it

        await pilot.press("f1")
        await wait_until(pilot, lambda: app.screen is chat, 10, "the chat")
        assert "no model" in _status(app) and tiny_checkpoint not in _status(app)
        assert len(chat.turns) == 2  # the conversation stays on screen and in the store
        # a message now is refused with a reason, and stays in the input
        await _send(pilot, "still there?")
        assert chat.query_one(ChatInput).text == "still there?"
        assert len(chat.turns) == 2 and chat.reply is None
        assert any("No model yet" in str(n.message) for n in app._notifications), [n.message for n in app._notifications]
        assert app.is_running


async def test_deleting_the_active_checkpoint_mid_reply_stops_the_reply(ckpt_home, tiny_checkpoint, monkeypatch):
    """The chat's model deleted while its reply streams (thread path): the reply ends there,
    stopped and stored as stopped, as when another model is chosen, not run on or failed."""
    monkeypatch.setenv("MINIGPT_DECODE_PROCESS", "0")
    app = MiniGPTApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready_on(pilot, app, in_child=False)
        app.settings = replace(app.settings, sampling=ENDLESS)
        chat = app.views["chat"]
        await _send(pilot, "In the beginning")
        await wait_until(pilot, lambda: chat.reply is not None and len(chat.reply.text) > 20, 60, "a streaming reply")
        app.delete_checkpoint(tiny_checkpoint)
        await wait_until(pilot, lambda: app.model_status == "none", 30, "the active model to go")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the reply to end")
        reply = chat.turns[-1]
        assert reply.role == "assistant" and reply.stopped and reply.content, reply
        stored = app.conversations.turns(chat.conversation_id)
        assert stored[-1].stopped and stored[-1].content == reply.content
        assert "stopped" in _status(app) and "no model" in _status(app), _status(app)
