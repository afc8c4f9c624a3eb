"""The chat screen, driven with Pilot against a real tiny checkpoint."""

from __future__ import annotations

import threading

import pytest

from test_tui_support import FakeChat, anyio_backend, shown_texts, fake_ready, ckpt_home, plain, wait_until  # noqa: F401  (fixtures)
from engine.events import TokenGenerated
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView
from tui.safe import visible

pytestmark = pytest.mark.anyio


async def _ready(pilot, app, name=None):
    await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model to load")
    if name:
        assert app.active_name == name


async def _send(pilot, text: str) -> None:
    inp = pilot.app.screen.query_one(ChatInput)
    inp.focus()
    inp.load_text(text)
    await wait_until(pilot, lambda: pilot.app.focused is inp, 5, "focus on the input")
    await pilot.press("enter")


def _turns(app):
    return list(app.screen.query(TurnView))


async def test_send_message_streams_reply_and_persists(ckpt_home, tiny_checkpoint, monkeypatch, shown_texts):
    shown = shown_texts
    monkeypatch.setattr("tui.screens.chat.REPLY_UPDATE_INTERVAL_S", 0.0)  # every piece on screen (see the batching test)
    app = MiniGPTApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot, app, tiny_checkpoint)  # the only checkpoint is opened at start-up
        status = plain(app.screen.query_one("#chat-status"))
        assert tiny_checkpoint in status
        # the fast decode path warms up in the background after the load, then the status says so
        await wait_until(pilot, lambda: "fast decode" in plain(app.screen.query_one("#chat-status")), 60, "the fast path")
        assert app.chat_model.decode_path == "fast"
        app.settings = app.settings.__class__(sampling=app.settings.sampling.__class__(max_new_tokens=48, seed=1))
        await _send(pilot, "In the beginning")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None, 60, "the reply to finish")
        user, reply = _turns(app)[-2:]
        assert user.role == "user" and user.text == "In the beginning"
        assert reply.role == "assistant" and reply.text and not reply.stopped
        # streamed: the reply grew on screen piece by piece before it was complete
        assert len(shown) >= 2 and len(shown[0]) < len(reply.text) and reply.text.startswith(shown[0])
        status = plain(app.screen.query_one("#chat-status"))
        assert "tok/s" in status and "1st token" in status and "ms" in status
        # persisted in SQLite
        convs = app.conversations.list()
        assert len(convs) == 1 and convs[0].messages == 2
        turns = app.conversations.turns(convs[0].id)
        assert [t.role for t in turns] == ["user", "assistant"] and turns[1].content == reply.text


async def test_escape_stops_reply_and_keeps_partial(ckpt_home, tiny_checkpoint):
    app = MiniGPTApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot, app)
        app.chat_model = FakeChat([f"w{i} " for i in range(400)], delay=0.02)
        await _send(pilot, "go on")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is not None and len(chat.reply.text) > 6, 30, "some tokens")
        assert "esc stops" in plain(chat.reply)  # the key is named where the user looks, not in the footer
        await pilot.press("escape")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the stop")
        reply = _turns(app)[-1]
        assert reply.stopped and reply.text.startswith("w0 w1 ") and len(reply.text) < len("".join(f"w{i} " for i in range(400)))
        assert "[stopped]" in plain(reply) and "esc stops" not in plain(reply)
        assert "stopped" in plain(app.screen.query_one("#chat-status"))
        turns = app.conversations.turns(app.conversations.list()[0].id)
        assert turns[-1].stopped and turns[-1].content == reply.text


async def test_stop_hint_follows_the_keymap(fresh_dirs):
    """The streaming reply names the key that stops it, wherever the user's keymap put it."""
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        chat = app.views["chat"]
        await fake_ready(pilot, app, FakeChat([f"w{i} " for i in range(400)], delay=0.02))
        app.set_keymap({"chat.stop": "f9"})
        await _send(pilot, "go on")
        await wait_until(pilot, lambda: chat.reply is not None and len(chat.reply.text) > 6, 30, "some tokens")
        assert "f9 stops" in plain(chat.reply)
        await pilot.press("f9")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the stop")
        assert _turns(app)[-1].stopped


async def test_streaming_reply_grows_with_its_text(fresh_dirs):
    """A streaming reply shown as raw text repaints in place and is laid out again only when its
    height changes: at every moment the turn is exactly as tall as its text (nothing clipped, no
    blank tail)."""
    from dataclasses import replace

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(60, 40)) as pilot:
        chat = app.views["chat"]
        await fake_ready(pilot, app, FakeChat([f"word{i} " + ("\n" if i % 9 == 8 else "") for i in range(120)], delay=0.01))
        app.settings = replace(app.settings, markdown=False)  # the literal path (Markdown lays itself out)
        await _send(pilot, "go")
        heights = set()
        await wait_until(pilot, lambda: chat.reply is not None, 10, "the reply")
        while chat.reply is not None:
            reply = chat.reply
            text = reply.query_one(".turn-text")  # the header and the literal text, one Static
            await pilot.pause()
            if text.is_mounted and text.content_size.width:
                assert not reply.markdown and reply.content_size.height == text.content_size.height
                assert text.content_size.height == text.visual.get_height(text.styles, text.content_size.width), reply.text
                heights.add(text.content_size.height)
        assert len(heights) >= 4  # it grew while streaming, line by line


async def test_markup_and_escapes_shown_literally(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    nasty = ["[bold]big[/bold] ", "[link=http://x.test]click[/link] ", "\x1b[31mred\x1b[0m ", "bell\x07 \x9b2J"]
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(nasty))
        await _send(pilot, "[italic]me[/italic] \x1b]0;title\x07")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None, 30, "the reply")
        user, reply = _turns(app)[-2:]
        shown = plain(reply)
        assert "[bold]big[/bold]" in shown and "[link=http://x.test]click[/link]" in shown
        assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
        assert "\u241b[31mred\u241b[0m" in shown and "bell\u2407" in shown and "\\x9b2J" in shown
        assert "[italic]me[/italic]" in plain(user) and "\x1b" not in plain(user)
        # the stored text is the real text; only the display is made safe
        assert chat.turns[-1].content == "".join(nasty)
        # nothing was interpreted as Rich markup: no bold from "[bold]", no link from "[link=...]"
        # (Markdown makes a link of the bare URL, never opened: tests/test_tui_markdown.py)
        from textual.widgets import Static

        assert reply.markdown
        spans = [span for block in reply.query_one("Markdown").query(Static) for span in getattr(block.content, "spans", [])]
        assert not any("bold" in str(span.style) or "strong" in str(span.style) for span in spans), spans
        assert all(str(getattr(span.style, "meta", {}).get("@click", "")) in ("", "link('http://x.test')") for span in spans), spans
        # the raw text view (F9): one literal Static, its only style the header's
        await pilot.press("f9")
        assert not reply.markdown
        rendered = reply.query_one(".turn-text").content
        assert "[bold]big[/bold]" in plain(reply) and "\x1b" not in plain(reply)
        assert not any("bold" in str(span.style) or "link" in str(span.style) for span in getattr(rendered, "spans", [])[1:])
        # the conversation list shows the title literally too (a DataTable parses str cells as markup)
        await pilot.press("f5")
        await wait_until(pilot, lambda: getattr(app.screen, "loaded", None) is not None, 10, "the saved chats")
        from textual.widgets import DataTable

        title = app.screen.query_one(DataTable).get_row_at(0)[0]
        assert title.plain.startswith("[italic]me[/italic] \u241b]0;title\u2407") and not title.spans
        app.notify("[Errno 2] [bold]not markup[/bold]")  # must not raise a markup error
        await pilot.pause()


def test_visible_controls():
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("\x1b[0m\r\x00\x7f") == "\u241b[0m\u240d\u2400\u2421"


async def test_input_newline_and_history(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await fake_ready(pilot, app, FakeChat(["ok"]))
        inp = app.screen.query_one(ChatInput)
        inp.focus()
        await pilot.press("o", "n", "e", "ctrl+j", "t", "w", "o")
        assert inp.text == "one\ntwo"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.views["chat"].reply is None, 10, "reply")
        assert _turns(app)[0].text == "one\ntwo"
        await _send(pilot, "second")
        await wait_until(pilot, lambda: app.views["chat"].reply is None, 10, "reply")
        assert inp.text == ""
        await pilot.press("up")
        assert inp.text == "second"
        await pilot.press("up")
        assert inp.text == "one\ntwo"
        await pilot.press("down", "down")  # cursor to the last line, then forward in history
        assert inp.text == "second"
        await pilot.press("down")
        assert inp.text == ""


async def test_new_chat_reopen_and_export(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["a reply"]))
        await _send(pilot, "first question")
        await wait_until(pilot, lambda: app.views["chat"].reply is None, 10, "reply")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert _turns(app) == [] and app.views["chat"].conversation_id is None
        await pilot.press("f5")
        await wait_until(pilot, lambda: getattr(app.screen, "loaded", None) is not None, 10, "the saved chats")
        from textual.widgets import DataTable

        table = app.screen.query_one(DataTable)
        assert table.row_count == 1
        # export: the default path, then again (exists -> asked; "n" keeps the file)
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        conv = app.conversations.list()[0]
        path = app.conversations.default_export_path(conv.id)
        text = path.read_text()
        assert "first question" in text and "a reply" in text
        path.write_text("keep me")
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        from tui.screens.dialogs import ConfirmScreen

        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert path.read_text() == "keep me"
        # rename, then open it again
        await pilot.press("r")
        await pilot.pause()
        from textual.widgets import Input

        app.screen.query_one(Input).value = "Renamed chat"
        await pilot.press("enter")
        await pilot.pause()
        assert app.conversations.get(conv.id).title == "Renamed chat"
        await pilot.press("enter")  # open
        await wait_until(pilot, lambda: len(_turns(app)) == 2, 10, "the conversation to reopen")
        assert _turns(app)[0].text == "first question"
        # delete with confirmation
        await pilot.press("f5")
        await wait_until(pilot, lambda: getattr(app.screen, "loaded", None) is not None, 10, "the saved chats")
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.conversations.list() == []


async def test_sampling_settings_validate_and_persist(fresh_dirs):
    from engine.store.settings import Sampling, load_settings
    from textual.widgets import Input

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#s-temperature", Input).value = "0.5"
        screen.query_one("#s-top_k", Input).value = "-3"
        screen.query_one("#s-temperature", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen  # refused
        assert "top-k" in plain(screen.query_one("#sampling-error"))

        def marked() -> list[str]:
            return [inp.id for inp in screen.query(Input) if inp.has_class("-invalid")]

        assert marked() == ["s-top_k"]  # the error's own field, not a search of its text
        for key, bad in [("max_new_tokens", "0"), ("repetition_penalty", "x"), ("top_p", "2"), ("seed", "-1")]:
            screen.query_one("#s-top_k", Input).value = "7"
            screen.query_one(f"#s-{key}", Input).value = bad
            screen.query_one("#s-temperature", Input).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is screen and marked() == [f"s-{key}"], (key, marked(), plain(screen.query_one("#sampling-error")))
            screen.query_one(f"#s-{key}", Input).value = {"max_new_tokens": "64", "repetition_penalty": "1.1", "top_p": "1", "seed": ""}[key]
        screen.query_one("#s-top_k", Input).value = "7"
        screen.query_one("#s-seed", Input).value = "42"
        screen.query_one("#s-seed", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is not screen, plain(screen.query_one("#sampling-error"))
        chat = app.views["chat"]
        assert (chat.sampling.temperature, chat.sampling.top_k, chat.sampling.seed) == (0.5, 7, 42)
        assert load_settings().sampling == Sampling()  # Save: this chat's, not the defaults
        assert "temp 0.5" in plain(chat.query_one("#chat-status")) and "seed 42" in plain(chat.query_one("#chat-status"))
        await pilot.press("f4")
        await pilot.pause()
        assert app.screen.query_one("#s-top_k", Input).value == "7"  # the chat's values
        await pilot.click("#make-default")
        await pilot.pause()
        assert chat.chat_sampling is None  # the chat's values are now the defaults it follows
        assert "temp 0.5" not in plain(chat.query_one("#chat-status"))
    saved = load_settings().sampling
    assert (saved.temperature, saved.top_k, saved.seed) == (0.5, 7, 42)


class GatedChat(FakeChat):
    """A FakeChat whose pieces come only as the test lets them through (``let(n)``): the reply is
    exactly as long as the test says at every moment, however slow the machine."""

    def __init__(self, pieces: list[str]):
        super().__init__(pieces)
        self.gate = threading.Semaphore(0)

    def let(self, n: int) -> None:
        self.gate.release(n)

    def stream(self, prompt, sampling=None, stop=None, details=False):
        for event in super().stream(prompt, sampling, stop, details):
            if isinstance(event, TokenGenerated):
                while not self.gate.acquire(timeout=0.05):
                    if stop is not None and stop.is_set():
                        break
            yield event


class ClockedChat(FakeChat):
    """A FakeChat that sets the screen's clock: piece i is produced at second i."""

    def __init__(self, pieces: list[str], clock: list[float]):
        super().__init__(pieces)
        self.clock = clock

    def stream(self, prompt, sampling=None, stop=None, details=False):
        for event in super().stream(prompt, sampling, stop, details):
            if isinstance(event, TokenGenerated):
                self.clock[0] = float(event.index)
            yield event


async def test_view_follows_bottom_only_while_at_bottom(fresh_dirs, monkeypatch):
    monkeypatch.setattr("tui.screens.chat.REPLY_UPDATE_INTERVAL_S", 0.0)  # every piece on screen at once
    model = GatedChat([f"line {i}\n" for i in range(300)])
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await fake_ready(pilot, app, model)
        await _send(pilot, "many lines please")
        chat = app.views["chat"]
        view = chat.view
        lines = lambda: chat.reply.text.count("\n") if chat.reply is not None else -1  # noqa: E731
        at_bottom = lambda: view.max_scroll_y > 0 and view.scroll_y >= view.max_scroll_y - 1  # noqa: E731

        async def let_through(n: int, total: int) -> None:
            """``n`` more lines, then wait until they are in the reply and laid out."""
            model.let(n)
            await wait_until(pilot, lambda: lines() == total, 30, f"{total} lines in the reply")
            reply = chat.reply
            await wait_until(pilot, lambda: reply.content_size.height >= total, 30, f"the reply laid out with {total} lines")

        await let_through(60, 60)  # far more than the 24 rows
        await wait_until(pilot, at_bottom, 10, "the view to follow the bottom of the streaming reply")
        view.scroll_home(animate=False)  # the user scrolls up to read
        await wait_until(pilot, lambda: view.scroll_y == 0, 10, "the scroll home")
        await let_through(40, 100)
        await pilot.pause()
        assert view.scroll_y == 0  # left where the user put it while the reply grew by 40 lines
        view.scroll_end(animate=False)  # back at the bottom: follows again
        await wait_until(pilot, at_bottom, 10, "the scroll to the end")
        await let_through(40, 140)
        assert chat.reply is not None  # still streaming: the rest is held back
        await wait_until(pilot, at_bottom, 10, "the view to follow the bottom again")
        model.let(300)
        await wait_until(pilot, lambda: chat.reply is None, 30, "the end")
        assert _turns(app)[-1].text.count("\n") == 300
        await wait_until(pilot, at_bottom, 10, "the view at the bottom of the finished reply")


async def test_streaming_updates_are_batched(fresh_dirs, monkeypatch, shown_texts):
    """The worker posts the reply at most once per REPLY_UPDATE_INTERVAL_S (the first piece at
    once), so a fast model does not make the UI redraw, and take the GIL, for every token.  The
    clock the batching reads is the model's: piece i comes at second i, so with a 5 s interval
    exactly pieces 0, 5, 10, ... are posted, however fast or slow the machine runs."""
    import types

    from tui import messages, reply_stream
    from tui.screens import chat as chat_mod

    clock = [0.0]
    monkeypatch.setattr(reply_stream, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(chat_mod, "REPLY_UPDATE_INTERVAL_S", 5.0)
    posted: list[str] = []  # what the worker posts (the real message, recorded on the way)

    def progress(reply_id, text):
        posted.append(text)
        return messages.ReplyProgress(reply_id, text)

    monkeypatch.setattr(reply_stream, "ReplyProgress", progress)
    shown = shown_texts
    pieces = [f"w{i} " for i in range(300)]
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await fake_ready(pilot, app, ClockedChat(pieces, clock))
        await _send(pilot, "go")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None, 30, "the reply")
        reply = _turns(app)[-1]
        assert reply.text == "".join(pieces)  # nothing lost between updates
        # the first piece at once, then one update per 5 pieces (5 s), each with all the text so far
        assert posted == ["".join(pieces[: i + 1]) for i in range(0, 300, 5)], [len(t) for t in posted]
        # the screen showed only what was posted, in order (a queued update may be replaced by a newer one)
        assert shown and all(a in posted for a in shown) and shown == sorted(shown, key=len)
