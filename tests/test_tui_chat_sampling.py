"""Sampling settings belong to the chat: F4 edits the open chat's, stored with it and restored
when it opens again (after a restart too); "Make default" sets them for new chats; a new chat
takes the defaults; the status line names the chat's own values.  Pilot, real SQLite and settings."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from engine.store.settings import Sampling, load_settings
from test_tui_support import FakeChat, anyio_backend, fake_ready, plain, wait_until  # noqa: F401
from tui.app import MiniGPTApp

pytestmark = pytest.mark.anyio

OWN = {"temperature": "0.35", "top_k": "9", "top_p": "0.6", "max_new_tokens": "21", "repetition_penalty": "1.3", "seed": "77"}
OWN_SAMPLING = Sampling(temperature=0.35, top_k=9, top_p=0.6, max_new_tokens=21, repetition_penalty=1.3, seed=77)


class RecordingChat(FakeChat):
    """A FakeChat that keeps the sampling each reply was made with."""

    def __init__(self, pieces):
        super().__init__(pieces)
        self.used: list[Sampling] = []

    def stream(self, prompt, sampling=None, stop=None, details=False):
        self.used.append(sampling)
        yield from super().stream(prompt, sampling, stop, details)


async def _send(pilot, text: str) -> None:
    chat = pilot.app.views["chat"]
    count = len(pilot.app.chat_model.used)
    await pilot.press(*text, "enter")
    await wait_until(pilot, lambda: len(pilot.app.chat_model.used) == count + 1 and chat.reply is None, 10, "the reply")


async def _f4_values(pilot) -> dict[str, str]:
    await pilot.press("f4")
    await pilot.pause()
    values = {key: pilot.app.screen.query_one(f"#s-{key}", Input).value for key in OWN}
    await pilot.press("escape")
    await pilot.pause()
    return values


async def test_a_chats_own_sampling_is_restored_when_it_opens_and_a_new_chat_takes_the_defaults(fresh_dirs):
    defaults = {key: str(getattr(Sampling(), key) if getattr(Sampling(), key) is not None else "") for key in OWN}
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await fake_ready(pilot, app, RecordingChat(["ok"]))
        chat = app.views["chat"]
        await pilot.press("f4")
        await pilot.pause()
        for key, value in OWN.items():
            app.screen.query_one(f"#s-{key}", Input).value = value
        await pilot.click("#save")
        await pilot.pause()
        await _send(pilot, "hello")
        assert app.chat_model.used[-1] == OWN_SAMPLING
        status = plain(chat.query_one("#chat-status"))
        assert "temp 0.35 \u00b7 top-k 9 \u00b7 top-p 0.6 \u00b7 rep 1.3 \u00b7 max 21 \u00b7 seed 77" in status, status
        cid = chat.conversation_id
        await pilot.press("ctrl+n")  # a new chat: the defaults
        await pilot.pause()
        assert chat.sampling == Sampling() and await _f4_values(pilot) == defaults
        await _send(pilot, "another")
        assert app.chat_model.used[-1] == Sampling()
        assert "temp" not in plain(chat.query_one("#chat-status"))
    assert load_settings().sampling == Sampling()  # Save changed the chat's, not the defaults

    app = MiniGPTApp(autoload=False)  # a restart
    async with app.run_test(size=(120, 30)) as pilot:
        await fake_ready(pilot, app, RecordingChat(["ok"]))
        chat = app.views["chat"]
        app.open_conversation(cid)
        await wait_until(pilot, lambda: chat.conversation_id == cid, 10, "the chat")
        assert await _f4_values(pilot) == OWN  # every value restored
        await _send(pilot, "again")
        assert app.chat_model.used[-1] == OWN_SAMPLING
        # Make default: new chats take them too
        await pilot.press("f4")
        await pilot.pause()
        await pilot.click("#make-default")
        await pilot.pause()
        assert load_settings().sampling == OWN_SAMPLING
        await pilot.press("ctrl+n")
        await pilot.pause()
        await _send(pilot, "new")
        assert app.chat_model.used[-1] == OWN_SAMPLING
