"""What chat users expect: copy a reply, regenerate it, edit and resend the last message, a
context meter, a saved chat that brings its checkpoint back, palette entries, a keymap file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_tui_support import FakeChat, anyio_backend, chat_turns, fake_ready, ckpt_home, copy_checkpoint, open_palette, plain, run_from_palette, wait_until  # noqa: F401
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView

pytestmark = pytest.mark.anyio


async def _send(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")
    chat = pilot.app.views["chat"]
    await wait_until(pilot, lambda: chat.reply is None and chat_turns(pilot.app) and chat_turns(pilot.app)[-1].role == "assistant", 60, "the reply")


async def test_copy_regenerate_and_edit(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["first ", "answer"]))
        chat = app.views["chat"]
        store = app.conversations
        await pilot.press("ctrl+o")  # nothing to copy yet: said, nothing copied
        assert app.clipboard == ""
        await _send(pilot, "question")
        await pilot.press("ctrl+o")
        assert app.clipboard == "first answer"
        # regenerate: a new version of the last reply, the first one kept
        app.chat_model = FakeChat(["second ", "answer"])
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: chat.reply is None and chat_turns(app)[-1].text == "second answer", 10, "the new reply")
        assert [(t.role, t.text) for t in chat_turns(app)] == [("user", "question"), ("assistant", "second answer")]
        assert chat_turns(app)[-1].version == (2, 2)
        stored = store.turns(chat.conversation_id)
        assert [(t.role, t.content, t.versions) for t in stored] == [("user", "question", 1), ("assistant", "second answer", 2)]
        await pilot.press("alt+left")
        await pilot.pause()
        assert [t.text for t in chat_turns(app)] == ["question", "first answer"] and chat_turns(app)[-1].version == (1, 2)
        await pilot.press("ctrl+o")
        assert app.clipboard == "first answer"  # the version shown
        # edit the last message: it goes back to the input, its reply leaves the view (not the store)
        await pilot.press("ctrl+g")
        await pilot.pause()
        inp = chat.query_one(ChatInput)
        assert inp.text == "question" and app.focused is inp
        assert chat_turns(app) == [] and chat.turns == []
        # Esc cancels the edit: the chat as it was
        await pilot.press("escape")
        await pilot.pause()
        assert [t.text for t in chat_turns(app)] == ["question", "first answer"] and inp.text == ""
        await pilot.press("ctrl+g")
        await pilot.pause()
        await pilot.press("end", *" again")
        app.chat_model = FakeChat(["third"])
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.reply is None and len(chat_turns(app)) == 2, 10, "the reply")
        assert [t.content for t in store.turns(chat.conversation_id)] == ["question again", "third"]
        assert [t.version for t in chat_turns(app)] == [(2, 2), (1, 1)]
        await pilot.press("alt+left")  # the first version of the message, with the reply shown last there
        await pilot.pause()
        assert [t.content for t in store.turns(chat.conversation_id)] == ["question", "first answer"]
        assert [t.text for t in chat_turns(app)] == ["question", "first answer"]


@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
async def test_context_meter_shows_the_window_and_what_was_cut(ckpt_home, tiny_checkpoint):
    app = MiniGPTApp()
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model")
        from engine.store.settings import Sampling, Settings

        app.settings = Settings(sampling=Sampling(max_new_tokens=4, seed=1))
        window = app.chat_model.n_positions
        await _send(pilot, "And God said")
        status = plain(app.views["chat"].query_one("#chat-status"))
        used = len(app.chat_model.encode("And God said"))
        assert f"ctx {used}/{window}" in status and "cut" not in status
        await _send(pilot, " ".join(["light"] * (window * 2)))
        status = plain(app.views["chat"].query_one("#chat-status"))
        assert f"/{window}" in status and "cut" in status


async def test_opening_a_saved_chat_brings_back_its_checkpoint(ckpt_home, tiny_checkpoint):
    copy_checkpoint(ckpt_home, tiny_checkpoint, "second-model")
    app = MiniGPTApp(checkpoint=tiny_checkpoint)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model")
        from engine.store.settings import Sampling, Settings

        app.settings = Settings(sampling=Sampling(max_new_tokens=3, seed=1))
        await _send(pilot, "In the beginning")
        first = app.views["chat"].conversation_id
        await pilot.press("ctrl+n")
        app.use_checkpoint("second-model")
        await wait_until(pilot, lambda: app.model_status == "ready" and app.active_name == "second-model", 120, "the switch")
        app.open_conversation(first)
        await wait_until(pilot, lambda: app.active_name == tiny_checkpoint, 10, "the chat's checkpoint")
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "it to load")
        # a chat held with a checkpoint that is gone says so and keeps the current model
        await pilot.press("ctrl+n")
        app.use_checkpoint("second-model")
        await wait_until(pilot, lambda: app.model_status == "ready" and app.active_name == "second-model", 120, "the switch")
        ckpt_home.delete(tiny_checkpoint)
        app.open_conversation(first)
        await wait_until(pilot, lambda: app.views["chat"].conversation_id == first, 10, "the chat")
        assert app.active_name == "second-model"
        notes = " ".join(plain(n) for n in app.views["chat"].query("NoteView"))
        assert "which is gone" in notes and "second-model" in notes


async def test_palette_lists_checkpoints_and_saved_chats(ckpt_home, tiny_checkpoint):
    copy_checkpoint(ckpt_home, tiny_checkpoint, "palette-model")
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["hi"]))
        await _send(pilot, "a chat about lions")
        await pilot.press("ctrl+n")
        await run_from_palette(pilot, "use palette", "Use palette-model")
        await wait_until(pilot, lambda: app.active_name == "palette-model", 10, "Use palette-model")
        await wait_until(pilot, lambda: app.model_status in ("ready", "failed"), 120, "the load")
        assert app.model_status == "ready"
        await run_from_palette(pilot, "open a chat about lions", "Open a chat about lions")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.conversation_id is not None, 10, "Open the chat")
        assert [t.text for t in chat_turns(app)][0] == "a chat about lions"


async def test_palette_lists_entries_read_after_the_query_was_typed(fresh_dirs, monkeypatch):
    """The saved chats are read on a thread when the palette opens; a query typed before they
    arrive (each keystroke cancels the search before it) still finds them once they do.  The read
    is held until the whole query is typed, so the search always starts first."""
    import threading

    from tui import commands

    typed = threading.Event()
    real_load = commands.ChatsProvider.load

    def held_load(self):
        assert typed.wait(30), "the query was never typed"
        return real_load(self)

    monkeypatch.setattr(commands.ChatsProvider, "load", held_load)
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["hi"]))
        await _send(pilot, "zebras at noon")
        await wait_until(pilot, lambda: len(chat_turns(app)) == 2 and app.views["chat"].reply is None, 10, "the reply")
        await pilot.press("ctrl+n")
        await open_palette(pilot)
        await pilot.press(*"open zebras")
        typed.set()
        await run_from_palette(pilot, "open zebras", "Open zebras at noon", typed=True)
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.conversation_id is not None, 10, "Open the chat")
        assert [t.text for t in chat_turns(app)][0] == "zebras at noon"


async def test_keymap_file_rebinds_keys_and_reports_bad_entries(fresh_dirs):
    from engine.store.paths import keymap_file

    path = keymap_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chat.new": "ctrl+l", "no.such": "ctrl+x", "chat.copy": 5}))
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["ok"]))
        await _send(pilot, "hello")
        chat = app.views["chat"]
        assert chat.conversation_id is not None
        await pilot.press("ctrl+l")  # the user's key for a new chat
        await wait_until(pilot, lambda: chat.conversation_id is None and not chat_turns(app), 5, "a new chat")
        messages = " ".join(str(n.message) for n in app._notifications)
        assert "no.such" in messages and "chat.copy" in messages


def test_full_text_search_in_the_same_database(tmp_path):
    """FTS5 over every message, in the conversation file itself; words are never FTS syntax;
    a database from before search is indexed when opened."""
    import sqlite3

    from tui.store.conversations import ConversationStore, Turn, fts_query

    path = tmp_path / "c.sqlite3"
    old = sqlite3.connect(path)  # an existing database without the search index
    from tui.store.conversations import SCHEMA

    old.executescript(SCHEMA)
    old.execute("INSERT INTO conversations (title, checkpoint, created, updated) VALUES ('old one', NULL, 'x', 'x')")
    old.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'user', 'the zebra crossing', 'x')")
    old.commit()
    old.close()
    store = ConversationStore(path)
    assert [c.title for c in store.search("zebra")] == ["old one"]
    lions = store.create("about lions", None)
    store.add(lions, Turn("user", "Tell me about lions in Kenya"))
    store.add(lions, Turn("assistant", "Lions live in prides."))
    quotes = store.create("odd", None)
    store.add(quotes, Turn("user", 'He said "AND" OR NOT (this) near* -x'))
    found = store.search("lion kenya")  # every word, as a word or its start
    assert [c.id for c in found] == [lions] and "\u00bbKenya\u00ab" in found[0].snippet
    assert [c.id for c in store.search('"AND" OR NOT (this')] == [quotes]  # literal, no syntax error
    assert store.search("prides")[0].messages == 2
    assert [c.id for c in store.search("about lions")] == [lions]  # matches the title too
    assert store.search("giraffe") == []
    message = store.turns(lions)[1].id
    store.remove_turn(message)  # the index follows deletes
    assert store.search("prides") == []
    store.delete(lions)
    assert store.search("kenya") == []
    assert fts_query('a "b') == '"a"* """b"*'


async def test_search_box_in_saved_chats(fresh_dirs):
    from textual.widgets import DataTable

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["noted"]))
        for text in ("first about apples", "second about pears"):
            await _send(pilot, text)
            await pilot.press("ctrl+n")
        await pilot.press("f5")
        screen = app.screen
        await wait_until(pilot, lambda: getattr(screen, "loaded", None) == "", 10, "the list")
        table = screen.query_one(DataTable)
        assert table.row_count == 2
        await pilot.press("slash", *"pear")
        await wait_until(pilot, lambda: screen.loaded == "pear", 10, "the search")
        assert table.row_count == 1 and table.get_row_at(0)[0].plain == "second about pears"
        assert "\u00bbpears\u00ab" in table.get_row_at(0)[4].plain
        await pilot.press("enter")  # Enter in the search opens the best hit
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat_turns(app) and chat_turns(app)[0].text == "second about pears", 10, "the chat")


# ``minigpt-tui generate`` (the command's own main) for each checkpoint in turn, in one process:
# one start-up (torch, transformers) instead of one per checkpoint; each reply is followed by a NUL.
_GENERATE_EACH = """
import sys
from engine.cli import main

for name in sys.argv[1].split("\\n"):
    code = main(["generate", "--checkpoint", name, *sys.argv[2:]])
    sys.stdout.write("\\0")
    sys.stdout.flush()
    if code:
        sys.exit(code)
"""


def _cli_generate(names: tuple[str, ...], prompt: str, sampling) -> subprocess.Popen:
    """``minigpt-tui generate`` of each checkpoint in the test's data dirs, with every sampling
    setting given as a flag (none comes from the settings file)."""
    from conftest import ROOT

    flags = ["--temperature", str(sampling.temperature), "--top-k", str(sampling.top_k), "--top-p", str(sampling.top_p),
             "--repetition-penalty", str(sampling.repetition_penalty), "--max-new-tokens", str(sampling.max_new_tokens),
             "--seed", str(sampling.seed)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _GENERATE_EACH, "\n".join(names), "--prompt", prompt, *flags],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_replies(proc: subprocess.Popen, names: tuple[str, ...]) -> list[str]:
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"minigpt-tui generate of {names} did not finish in 180 s")
    assert proc.returncode == 0, f"minigpt-tui generate: exit {proc.returncode}: {err[-2000:]}"
    replies = out.split("\0")
    assert len(replies) == len(names) + 1 and replies[-1] == "", f"generate printed {out!r}"
    assert all(r.endswith("\n") for r in replies[:-1]), replies
    return [r[:-1] for r in replies[:-1]]  # generate ends each reply with a newline


async def test_compare_two_checkpoints_side_by_side(ckpt_home, tiny_checkpoint, other_tiny_checkpoint, isolated_dirs):
    """Two different checkpoints answer one prompt; each side's text is what that checkpoint's
    own ``minigpt-tui generate`` prints for the same prompt, seed and sampling."""
    from textual.widgets import DataTable, Static

    from engine.store.settings import Sampling, Settings
    from test_tui_support import home_with
    from tui.screens.compare import CompareScreen

    home_with(other_tiny_checkpoint, isolated_dirs)
    prompt, sampling = "And God said", Sampling(max_new_tokens=12, seed=3)
    # the command line's replies, computed meanwhile in a process of its own
    names = (tiny_checkpoint, other_tiny_checkpoint)
    cli = _cli_generate(names, prompt, sampling)
    app = MiniGPTApp(checkpoint=tiny_checkpoint)
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model")
        app.settings = Settings(sampling=sampling)
        await pilot.press("f3")
        await wait_until(pilot, lambda: app.views.get("checkpoints") is not None and app.views["checkpoints"].loaded, 10, "the picker")
        picker = app.views["checkpoints"]
        table = picker.query_one("#ckpt-table", DataTable)
        table.move_cursor(row=table.get_row_index(tiny_checkpoint))
        await pilot.press("c")  # the active one itself: refused, said why
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)
        table.move_cursor(row=table.get_row_index(other_tiny_checkpoint))
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 10, "the compare screen")
        screen = app.screen
        assert screen.names == names
        await wait_until(pilot, lambda: all(m is not None for m in screen.models), 120, "both models")
        assert screen.models[0] is app.chat_model  # the chat's model is reused, not loaded again
        await pilot.press(*prompt)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.prompt_id == 1 and not screen.streaming, 60, "both replies")
        for side in (0, 1):
            reply = screen.replies[side]
            assert reply.text and not reply.error
            head = plain(screen.query_one(f"#compare-head-{side}", Static))
            assert "tok/s" in head and "tokens" in head
        shown = [screen.replies[0].text, screen.replies[1].text]
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is picker, 10, "back to the picker")
    expected = _cli_replies(cli, names)
    assert expected[0] != expected[1], f"the two checkpoints answer alike, so the sides cannot be told apart: {expected}"
    assert shown == expected, f"compare showed {shown}, generate printed {expected}"


async def test_token_inspector_on_a_real_reply(ckpt_home, tiny_checkpoint):
    import torch
    from textual.widgets import DataTable

    from tui.screens.inspector import InspectorScreen

    app = MiniGPTApp()
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model")
        from engine.store.settings import Sampling, Settings

        app.settings = Settings(sampling=Sampling(max_new_tokens=10, seed=2))
        await pilot.press("f8")  # nothing to inspect yet
        await pilot.pause()
        assert not isinstance(app.screen, InspectorScreen)
        await _send(pilot, "In the beginning")
        reply = chat_turns(app)[-1]
        assert reply.choices and len(reply.choices) >= 1
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen), 5, "the inspector")
        screen = app.screen
        shown = plain(screen.query_one("#inspector-text"))
        assert shown.replace("\u2400", "") == "".join(screen.text_of(c.token_id) for c in reply.choices)
        await pilot.press("right", "right")
        assert screen.selected == min(2, len(reply.choices) - 1)
        table = screen.query_one(DataTable)
        assert table.row_count == 10
        # the numbers against a direct forward pass
        chat = app.chat_model
        prompt = chat.encode_chat([{"role": "user", "content": "In the beginning"}])
        ids = prompt + [c.token_id for c in reply.choices]
        with torch.no_grad():
            probs = chat.model(input_ids=torch.tensor([ids])).logits[0].float().softmax(-1)
        i = screen.selected
        expected = probs[len(prompt) - 1 + i]
        first_row_prob = float(table.get_row_at(0)[2].plain)
        assert abs(first_row_prob - float(expected.max())) < 1e-3
        assert f"p = {float(expected[reply.choices[i].token_id]):.4f}" in plain(screen.query_one("#inspector-selected"))
        # a click on the first token selects it
        await pilot.click("#inspector-text", offset=(0, 0))
        await pilot.pause()
        assert screen.selected == 0
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, InspectorScreen), 5, "closed")
