"""Keys told right: every text that names a key (help, palette, titles, hints, notifications)
takes it from the bindings as they are now, so a keymap file moves it everywhere; every
binding has an id the keymap knows; the README's key table names the default keys."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from textual.command import CommandList

from test_tui_support import FakeChat, chat_turns, fake_ready, open_palette, plain, wait_until
from tui.app import MiniGPTApp
from tui.keymap import binding_ids, binding_owners, current_keys, key_label, placeholders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend():
    """The async test runs on asyncio (Textual's)."""
    return "asyncio"

# Moves keys of the app, the chat, the training screen, the saved chats and the dialogs; the
# last entries are ids an earlier app did not know (the keymap reported them as unknown).
KEYMAP = {
    "app.help": "f10",
    "app.checkpoints": "f11",
    "app.training": "f12",
    "chat.train_default": "ctrl+l",
    "chat.stop": "f9",
    "train.start": "f9",
    "conv.rename": "n",
    "conv.export": "x",
    "conv.search": "ctrl+f",
    "confirm.yes": "j",
    "confirm.no": "k",
    "help.close": "escape,q",
    "inspect.close": "escape,x",
    "compare.stop": "ctrl+k",
    "sampling.cancel": "escape,ctrl+w",
}


def _shown(widget) -> str:
    """What a widget shows, as plain text (a Rich renderable is rendered)."""
    content = widget.content
    if hasattr(content, "plain"):
        return content.plain
    if isinstance(content, str):
        return content
    console = Console(file=io.StringIO(), width=240, color_system=None)
    console.print(content)
    return console.file.getvalue()


def _notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def _has(text: str, key: str) -> bool:
    """``key`` named in ``text`` as a whole key (F1 is not in F11, Esc not in Escape)."""
    return re.search(rf"(?<![\w+^]){re.escape(key)}(?![\w+])", text) is not None


@pytest.mark.anyio
async def test_a_keymap_moves_every_key_the_app_names(fresh_dirs):
    from engine.store.paths import keymap_file
    from tui.screens.dialogs import ConfirmScreen
    from tui.screens.help import HelpScreen
    from tui.screens.saved_chats import ConversationsScreen

    path = keymap_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(KEYMAP))
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.query("#welcome-text"), 10, "the welcome")
        assert not [n for n in _notices(app) if "keymap" in n], _notices(app)  # every id is known

        # Textual's own keymap and ours agree: the chat's keys as the chat screen binds them now
        chat_ids = binding_ids(type(app), type(chat))
        for binding_id in chat_ids:
            bound = {key for key, active in chat.active_bindings.items() if active.binding.id == binding_id}
            assert bound <= set(current_keys(app, binding_id)), binding_id
        assert current_keys(app, "chat.stop") == ["f9"] and current_keys(app, "chat.new") == ["ctrl+n"]

        welcome = plain(chat.query_one("#welcome-text"))
        for key in ("Ctrl+L", "F11", "F12"):
            assert _has(welcome, key), (key, welcome)
        for key in ("Ctrl+T", "F3", "F2"):
            assert not _has(welcome, key), (key, welcome)

        await pilot.press(*"hello", "enter")  # no model yet
        await wait_until(pilot, lambda: any("No model yet" in n for n in _notices(app)), 5, "the notification")
        note = next(n for n in _notices(app) if "No model yet" in n)
        assert note == "No model yet: press Ctrl+L to train one, or F11 to pick one", note

        # the palette
        await open_palette(pilot)
        palette = app.screen
        results = palette.query_one(CommandList)
        await wait_until(pilot, lambda: any(getattr(o, "hit", None) and str(o.hit.text) == "Help" for o in results.options), 10, "the palette's entries")
        helps = {str(o.hit.text): str(o.hit.help) for o in results.options if getattr(o, "hit", None)}
        assert helps["Help"].endswith("(F10)") and helps["Checkpoints"].endswith("(F11)") and helps["Training"].endswith("(F12)")
        assert helps["Train the default model"].endswith("(Ctrl+L)") and helps["New chat"].endswith("(Ctrl+N)")
        every = " ".join(helps.values())
        for key in ("F6", "F3", "F2", "Ctrl+T"):
            assert not _has(every, key), (key, helps)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is chat, 5, "the palette to close")

        # the help: opened by the moved key, lists the moved keys, closed by the same key
        await pilot.press("f6")
        await pilot.pause()
        assert app.screen is chat  # the old key does nothing
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), 5, "the help")
        shown = _shown(app.screen.query_one("#help-keys"))
        for key in ("F10", "F11", "F12", "Ctrl+L", "F9", "Ctrl+F", "Ctrl+K"):
            assert _has(shown, key), (key, shown)
        for key in ("F6", "F3", "F2", "Ctrl+T", "Ctrl+X"):
            assert not _has(shown, key), (key, shown)
        assert re.search(r"^Esc / q\s+close this help", shown, re.M), shown
        assert re.search(r"^Ctrl\+N\s+new chat", shown, re.M), shown  # a key not moved stays
        await pilot.press("f10")
        await wait_until(pilot, lambda: app.screen is chat, 5, "the help to close with its key")

        # the saved chats
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationsScreen), 5, "the saved chats")
        title = plain(app.screen.query_one("#conversations-keys"))
        assert "n rename" in title and "x Markdown" in title and "Ctrl+F search" in title and "d delete" in title, title
        assert "r rename" not in title and "e export" not in title and "/ search" not in title, title
        assert app.screen.query_one("#conversations-search").placeholder == "search every message (Ctrl+F)"
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is chat, 5, "the saved chats to close")

        # a question
        answers = []
        app.push_screen(ConfirmScreen("Sure?"), answers.append)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#no"), 5, "the question")
        labels = [str(b.label) for b in app.screen.query("Button")]
        assert labels == ["Yes (j)", "No (k)"], labels
        await pilot.press("j")
        await wait_until(pilot, lambda: answers == [True], 5, "the answer")

        # the training screen and the checkpoints, by their moved keys
        await pilot.press("f12")
        await wait_until(pilot, lambda: app.screen is app.views.get("training"), 10, "the training screen")
        training = app.screen
        assert str(training.query_one("#start").label) == "Start run (F9)"
        assert plain(training.query_one("#run-title")) == "No run yet. Fill in the form and press F9."
        await pilot.press("f11")
        await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints") and app.screen.loaded, 10, "the checkpoints")
        status = plain(app.screen.query_one("#ckpt-status"))
        assert "none saved yet (F12 to train one)" in status, status

        # a streaming reply: its hint, and what a second message is told
        await pilot.press("f1")
        await wait_until(pilot, lambda: app.screen is chat, 5, "the chat")
        await fake_ready(pilot, app, FakeChat([f"w{i} " for i in range(400)], delay=0.02))
        chat.query_one("#chat-input").text = ""
        await pilot.press(*"go", "enter")
        await wait_until(pilot, lambda: chat.reply is not None and len(chat.reply.text) > 6, 30, "some tokens")
        assert "f9 stops" in plain(chat.reply)
        await pilot.press("ctrl+g")  # edit the last message: not while the reply streams
        await wait_until(pilot, lambda: any("still streaming" in n for n in _notices(app)), 5, "the notification")
        note = next(n for n in _notices(app) if "still streaming" in n)
        assert note == "A reply is still streaming: press F9 to stop it first", note
        await pilot.press("f9")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the stop")
        assert chat_turns(app)[-1].stopped


def test_every_binding_has_an_id_the_keymap_knows():
    """Each binding of the app's classes has an id (what a keymap names), and each key a text
    names by id (``<chat.stop>``) is one of them."""
    owners = binding_owners()
    names = {cls.__name__ for cls in owners}
    assert {"MiniGPTApp", "ChatScreen", "ChatInput", "TrainingScreen", "CheckpointsScreen", "ConversationsScreen",
            "CompareScreen", "InspectorScreen", "SamplingScreen", "HelpScreen", "ConfirmScreen", "PromptScreen", "DetailsScreen"} <= names, names
    for cls in owners:
        for binding in cls.BINDINGS:
            assert getattr(binding, "id", None), f"{cls.__name__}: a binding for {binding.key!r} has no id"
    known = binding_ids(*owners)
    named = set()
    for source in (ROOT / "tui").rglob("*.py"):
        named |= {(source.name, binding_id) for binding_id in placeholders(source.read_text(encoding="utf-8"))}
    assert named, "no text names a key by id"
    assert not {(name, i) for name, i in named if i not in known}, "texts name unknown binding ids"


def _strings_outside_docstrings(tree) -> list[ast.Constant]:
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))  # a docstring
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip |= {id(d) for d in node.args.defaults + node.args.kw_defaults if d is not None}  # a fallback
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def test_no_text_in_the_app_writes_a_bound_key_by_hand():
    """Keys such as Ctrl+T, F3, Esc, ^x or "(y)" appear in the app's texts only through the
    bindings (``tui.keymap``): a hand-written one would not follow a keymap."""
    by_hand = re.compile(r"\b(Ctrl|Shift|Alt)\+\w|\bF\d{1,2}\b|\b[Ee]sc\b|\^[a-z]\b|\([a-z]\)")
    found = []
    for source in sorted((ROOT / "tui").rglob("*.py")):
        if source.name == "keymap.py":  # (how prose names keys)
            continue
        for node in _strings_outside_docstrings(ast.parse(source.read_text(encoding="utf-8"))):
            if by_hand.search(node.value):
                found.append(f"{source.relative_to(ROOT)}:{node.lineno}: {node.value[:80]!r}")
    assert not found, "\n".join(found)


def test_prose_names_keys_as_the_readme_does():
    assert [key_label(k) for k in ("ctrl+t", "f3", "escape", "enter", "slash", "r", "shift+enter", "delete", "left", "ctrl+shift+x")] == [
        "Ctrl+T", "F3", "Esc", "Enter", "/", "r", "Shift+Enter", "Del", "\u2190", "Ctrl+Shift+X"]


def test_the_readme_key_table_names_every_default_key():
    """Each binding of the app, the chat, training, the checkpoints and the saved chats has its
    default key at the start of an entry in the README's row for its place."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| where | keys |"):].split("\n\n")[0]
    rows = dict(re.findall(r"^\| (everywhere|chat|training|checkpoints|saved chats) \| (.+) \|$", table, re.M))
    assert len(rows) == 5, rows
    where = {"app": "everywhere", "chat": "chat", "train": "training", "ckpt": "checkpoints", "conv": "saved chats"}
    owners = binding_owners()
    missing = []
    for cls in owners:
        for binding in cls.BINDINGS:
            place = where.get(binding.id.split(".")[0])
            if place is None:
                continue
            label = key_label(binding.key.split(",")[0])
            entries = [e.strip() for e in rows[place].split("\u00b7")]
            if not any(e.startswith(label + " ") for e in entries):
                missing.append(f"{binding.id}: {label} in the README's {place} row")
    assert not missing, missing


@pytest.mark.parametrize("keymap, expected", [
    ({}, {"chat.new": ["ctrl+n"], "chat.regenerate": ["ctrl+r"]}),
    ({"chat.new": "ctrl+l"}, {"chat.new": ["ctrl+l"], "chat.regenerate": ["ctrl+r"]}),
    # Textual gives a key the keymap moves onto another binding of the same screen to the mover
    ({"chat.new": "ctrl+r"}, {"chat.new": ["ctrl+r"], "chat.regenerate": []}),
    ({"ckpt.delete": "x"}, {"ckpt.delete": ["x"], "ckpt.rename": ["r"]}),
])
def test_current_keys_follow_the_keymap(keymap, expected):
    class Stub:
        _keymap = keymap

    for binding_id, keys in expected.items():
        assert current_keys(Stub(), binding_id) == keys
