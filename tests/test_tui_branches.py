"""Branches, not truncation: an edit (Ctrl+G) or a regenerated reply (Ctrl+R) is a new version
of its turn; the keys move between versions; every version survives a restart; a search hit opens
its branch; a corrected reply is a version written by the user.  Pilot, a real SQLite file."""

from __future__ import annotations

import pytest

from test_tui_support import FakeChat, anyio_backend, chat_turns, fake_ready, plain, run_from_palette, wait_until  # noqa: F401
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput

pytestmark = pytest.mark.anyio


async def _reply(pilot, words: list[str], keys: tuple[str, ...]) -> None:
    """Press ``keys`` with a model that answers ``words``; wait for the reply to be stored."""
    app = pilot.app
    chat = app.views["chat"]
    app.chat_model = FakeChat(words)
    before = app.conversations.db.execute("SELECT COUNT(*) FROM messages WHERE role = 'assistant'").fetchone()[0]
    await pilot.press(*keys)
    count = lambda: app.conversations.db.execute("SELECT COUNT(*) FROM messages WHERE role = 'assistant'").fetchone()[0]  # noqa: E731
    await wait_until(pilot, lambda: chat.reply is None and count() == before + 1, 10, f"the reply {words}")


async def _send(pilot, text: str, answer: str) -> None:
    await _reply(pilot, [answer], (*text, "enter"))


async def _edit(pilot, text: str, answer: str) -> None:
    """Ctrl+G, replace the message's text, send."""
    chat = pilot.app.views["chat"]
    await pilot.press("ctrl+g")
    await pilot.pause()
    chat.query_one(ChatInput).clear()
    await _reply(pilot, [answer], (*text, "enter"))


async def _select(pilot, index: int) -> None:
    chat = pilot.app.views["chat"]
    while chat.selected != index:
        await pilot.press("alt+up" if chat.selected > index else "alt+down")
        await pilot.pause()


async def every_version(pilot) -> set[str]:
    """Walk every version of every turn with the keys alone (depth first); the texts seen."""
    chat = pilot.app.views["chat"]
    seen: set[str] = set()

    async def visit(start: int) -> None:
        seen.update(t.content for t in chat.turns)
        assert [v.text for v in chat_turns(pilot.app)] == [t.content for t in chat.turns]  # the view is the path
        branched = [i for i, t in enumerate(chat.turns) if t.versions > 1 and i >= start]
        if not branched:
            return
        i = branched[0]
        await _select(pilot, i)
        for _ in range(chat.turns[i].version - 1):
            await pilot.press("alt+left")
            await pilot.pause()
        assert chat.turns[i].version == 1
        for version in range(1, chat.turns[i].versions + 1):
            assert chat.turns[i].version == version
            await visit(i + 1)
            await _select(pilot, i)
            if version < chat.turns[i].versions:
                await pilot.press("alt+right")
                await pilot.pause()

    await visit(0)
    return seen


async def test_three_edits_and_two_regenerations_survive_a_restart_and_every_version_is_reachable(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(["-"]))
        chat = app.views["chat"]
        await _send(pilot, "first question", "alpha")
        await _reply(pilot, ["bravo"], ("ctrl+r",))
        await _reply(pilot, ["charlie"], ("ctrl+r",))
        assert chat_turns(app)[-1].version == (3, 3)
        await _send(pilot, "second question", "delta")
        await _edit(pilot, "second question edited once", "echo")
        await _edit(pilot, "second question edited twice", "foxtrot")
        await _send(pilot, "third question", "golf")
        await _edit(pilot, "third question edited", "hotel")
        shown = [v.text for v in chat_turns(app)]
        assert shown == ["first question", "charlie", "second question edited twice", "foxtrot", "third question edited", "hotel"]
        assert [v.version for v in chat_turns(app)] == [(1, 1), (3, 3), (3, 3), (1, 1), (2, 2), (1, 1)]
        headers = [plain(v).split("\n")[0] for v in chat_turns(app)]
        assert headers[1].endswith("3/3") and headers[4].endswith("\u25c2 2/2 \u25b8")  # the last turn with versions is selected
        assert "/" not in headers[0] + headers[3] + headers[5]
        cid = chat.conversation_id

    app = MiniGPTApp(autoload=False)  # a restart: the same files
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(["-"]))
        chat = app.views["chat"]
        app.open_conversation(cid)
        await wait_until(pilot, lambda: chat.conversation_id == cid and len(chat_turns(app)) == 6, 10, "the chat")
        assert [v.text for v in chat_turns(app)] == shown  # the path chosen last
        seen = await every_version(pilot)
        every = {"first question", "alpha", "bravo", "charlie", "second question", "delta", "second question edited once", "echo",
                 "second question edited twice", "foxtrot", "third question", "golf", "third question edited", "hotel"}
        assert seen == every

        # a search hit in a branch that is not shown opens that branch
        await pilot.press("ctrl+n")
        await pilot.press("f5")
        await wait_until(pilot, lambda: getattr(app.screen, "loaded", None) == "", 10, "the saved chats")
        await pilot.press("slash", *"echo")
        await wait_until(pilot, lambda: app.screen.loaded == "echo", 10, "the search")
        await pilot.press("enter")  # the best hit
        await wait_until(pilot, lambda: chat.conversation_id == cid and chat_turns(app), 10, "the chat")
        await pilot.pause()
        assert [v.text for v in chat_turns(app)] == ["first question", "charlie", "second question edited once", "echo"]
        assert chat.turns[chat.selected].content == "second question edited once"  # the hit's turn has one version: the nearest above


async def test_a_corrected_reply_is_a_version_written_by_the_user(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["-"]))
        chat = app.views["chat"]
        store = app.conversations
        await _send(pilot, "what is two and two?", "five")
        await pilot.press("ctrl+f")
        await pilot.pause()
        inp = chat.query_one(ChatInput)
        assert inp.text == "five" and [v.text for v in chat_turns(app)] == ["what is two and two?"]
        await pilot.press(*"Four.", "enter")  # the reply's text is selected: typing replaces it
        await wait_until(pilot, lambda: len(chat_turns(app)) == 2, 10, "the correction")
        assert chat.reply is None  # no reply is made to a correction
        view = chat_turns(app)[-1]
        assert (view.text, view.version, view.edited) == ("Four.", (2, 2), True)
        stored = store.turns(chat.conversation_id)
        assert [(t.role, t.content, t.edited) for t in stored] == [("user", "what is two and two?", False), ("assistant", "Four.", True)]
        await pilot.press("alt+left")
        await pilot.pause()
        assert [(t.content, t.edited) for t in store.turns(chat.conversation_id)][-1] == ("five", False)
        await run_from_palette(pilot, "next version", "Next version")  # the palette switches versions too
        await wait_until(pilot, lambda: chat.turns[-1].content == "Four.", 10, "the corrected version")
        assert [v.text for v in chat_turns(app)] == ["what is two and two?", "Four."]


async def test_a_regenerated_reply_that_fails_leaves_the_chat_as_it_was(fresh_dirs):
    from test_tui_chat_state import FailingChat

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["-"]))
        chat = app.views["chat"]
        await _send(pilot, "hello", "the first reply")
        app.chat_model = FailingChat(["x"])
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: chat.reply is None and len(chat_turns(app)) == 2, 10, "the failed reply")
        await pilot.pause()
        assert [v.text for v in chat_turns(app)] == ["hello", "the first reply"]  # the question stays, with its reply
        stored = app.conversations.turns(chat.conversation_id)
        assert [(t.content, t.versions) for t in stored] == [("hello", 1), ("the first reply", 1)]
        assert chat.query_one(ChatInput).text == ""  # nothing given back to the input: the question was not just sent
