"""The app under damaged files, concurrent instances and hostile input."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from test_tui_support import FakeChat, anyio_backend, plain, wait_until  # noqa: F401  (fixtures)
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView
from tui.store.conversations import ConversationStore, Turn

@pytest.mark.anyio
async def test_damaged_conversation_db_is_kept_aside(fresh_dirs):
    from engine.store.paths import conversations_db

    db = conversations_db()
    db.parent.mkdir(parents=True, exist_ok=True)
    garbage = b"this is not an sqlite database\x00" * 200
    db.write_bytes(garbage)
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        store = app.conversations
        assert store.warning and "kept as" in store.warning
        await pilot.pause()
        cid = store.create("after the damage", None)
        store.add(cid, Turn("user", "hello"))
        assert [t.content for t in store.turns(cid)] == ["hello"]
    kept = [p for p in db.parent.iterdir() if p.name.startswith(db.name + ".bad-")]
    assert len(kept) == 1 and kept[0].read_bytes() == garbage


def test_two_instances_write_one_db_without_loss(tmp_path):
    path = tmp_path / "conv.sqlite3"
    ConversationStore(path).close()
    script = textwrap.dedent(f"""
        import sys
        from tui.store.conversations import ConversationStore, Turn
        store = ConversationStore({str(path)!r})
        cid = store.create("writer " + sys.argv[1], None)
        for i in range(150):
            store.add(cid, Turn("user", f"{{sys.argv[1]}}-{{i}}"))
        print(cid)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    store = ConversationStore(path)
    convs = store.list()
    assert sorted(c.messages for c in convs) == [150, 150]
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.anyio
async def test_huge_paste_control_chars_and_empty_input(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        app.chat_model, app.active_name, app.model_status = FakeChat(["ok", "\x1b[2J", "[b]x[/b]"]), "fake", "ready"
        await pilot.pause()
        inp = app.screen.query_one(ChatInput)
        inp.focus()
        await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
        # empty input sends nothing
        inp.load_text("   \n  ")
        await pilot.press("enter")
        await pilot.pause()
        assert not list(app.screen.query(TurnView))
        pasted = ("lorem ipsum \x07\x1b[31m[red]x[/red] " * 3000)[:100_000]
        inp.load_text(pasted)
        await pilot.press("enter")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None and len(list(app.screen.query(TurnView))) == 2, 30, "the reply")
        user, reply = list(app.screen.query(TurnView))
        assert user.text == pasted.strip() or user.text == pasted
        assert reply.text == "ok\x1b[2J[b]x[/b]"
        # still responsive: switch screens and back, and the input takes new text
        await pilot.press("f3")
        await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints"), 10, "the checkpoints screen")
        await pilot.press("f1")
        await wait_until(pilot, lambda: app.screen is chat, 10, "the chat screen again")
        inp = chat.query_one(ChatInput)
        inp.focus()
        await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
        inp.load_text("")
        await pilot.press("h", "i")
        assert inp.text == "hi"
