"""Replies as Markdown: rendered while they stream (the last text always shown at the end), the
raw text toggle (F9, remembered), copying the last code block (Ctrl+L), links never opened;
user text stays literal."""

from __future__ import annotations

import threading

import pytest

from test_tui_support import FakeChat, anyio_backend, shown_texts, fake_ready, plain, run_from_palette, wait_until  # noqa: F401  (fixtures)
from engine.events import GenerationFinished
from engine.store.settings import Settings, load_settings
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView, last_code_block

pytestmark = pytest.mark.anyio

REPLY = [
    "## Steps\n\n",
    "1. Install ",
    "it\n",
    "2. Run `minigpt-tui`\n\n",
    "```python\n",
    "print('hi')\n",
    "```\n\n",
    "Then **enjoy** it.\n",
    "Second line.",
]


async def _send(pilot, text: str) -> None:
    inp = pilot.app.screen.query_one(ChatInput)
    inp.focus()
    inp.load_text(text)
    await wait_until(pilot, lambda: pilot.app.focused is inp, 5, "focus on the input")
    await pilot.press("enter")
    chat = pilot.app.views["chat"]
    await wait_until(pilot, lambda: chat.reply is None, 30, "the reply")
    await pilot.app.workers.wait_for_complete()  # the Markdown body has caught up
    await pilot.pause()


def _turns(app) -> list[TurnView]:
    return list(app.views["chat"].query(TurnView))


def _blocks(turn: TurnView) -> list[str]:
    """The kinds of the reply's Markdown blocks, as Textual names them (the app's own paragraph
    and code block are Textual's, updated in place)."""
    return [next(c.__name__ for c in type(block).__mro__ if c.__module__.startswith("textual.")) for block in turn.query("Markdown > *")]


async def test_reply_is_rendered_as_markdown_and_user_text_stays_literal(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(REPLY, delay=0.01))
        await _send(pilot, "# not a heading **not bold**")
        user, reply = _turns(app)
        assert reply.markdown and not user.markdown
        assert _blocks(reply) == ["MarkdownH2", "MarkdownOrderedList", "MarkdownFence", "MarkdownParagraph"]
        shown = plain(reply)
        # the Markdown's marks are gone, its text is there; a newline is a line break, as typed
        assert "## Steps" not in shown and "Steps" in shown and "```" not in shown and "print('hi')" in shown
        assert "Then enjoy it.\nSecond line." in shown
        strong = [s for s in reply.query_one("MarkdownParagraph").content.spans if "strong" in str(s.style)]
        assert len(strong) == 1
        # the user's text: literal, no Markdown widget
        assert not user.query("Markdown") and "# not a heading **not bold**" in plain(user)
        # a saved chat opened again: its replies as Markdown too
        chat = app.views["chat"]
        chat.load_conversation(chat.conversation_id)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert _blocks(_turns(app)[1]) == ["MarkdownH2", "MarkdownOrderedList", "MarkdownFence", "MarkdownParagraph"]


async def test_the_whole_text_is_shown_when_the_reply_ends(fresh_dirs, monkeypatch, shown_texts):
    """The real streaming path with one update (the first piece) before the end: finishing shows
    the whole reply.  Then a reply whose final text does not continue what was streamed (the
    decode's last text re-decoded) is shown as the final text."""
    monkeypatch.setattr("tui.screens.chat.REPLY_UPDATE_INTERVAL_S", 60.0)  # the first piece only
    shown = shown_texts
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(REPLY))
        await _send(pilot, "go")
        reply = _turns(app)[-1]
        assert shown == [REPLY[0]]  # streamed: one update, the heading
        assert reply.text == "".join(REPLY) and "Second line." in plain(reply) and "print('hi')" in plain(reply)

        class Redecoded(FakeChat):
            """Its final text is not the streamed one continued; it ends when the test says."""

            go = threading.Event()

            def stream(self, prompt, sampling=None, stop=None, details=False):
                for event in super().stream(prompt, sampling, stop, details):
                    if isinstance(event, GenerationFinished):
                        self.go.wait(30)
                        event = GenerationFinished("Final *text*", 2, "eos", 0.001, 100.0, 0.01)
                    yield event

        model = app.chat_model = Redecoded(["# Draft\n", "words"])
        chat = app.views["chat"]
        inp = chat.query_one(ChatInput)
        inp.load_text("again")
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.reply is not None and "MarkdownH1" in _blocks(chat.reply), 30, "the draft on screen")
        model.go.set()
        await wait_until(pilot, lambda: chat.reply is None, 30, "the reply")
        await app.workers.wait_for_complete()
        reply = _turns(app)[-1]
        assert reply.text == "Final *text*" and _blocks(reply) == ["MarkdownParagraph"]
        assert plain(reply).endswith("Final text") and "Draft" not in plain(reply)


async def test_stopped_and_failed_replies_keep_their_marks_under_markdown(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        chat = app.views["chat"]
        await fake_ready(pilot, app, FakeChat([f"- item {i}\n" for i in range(400)], delay=0.02))
        inp = chat.query_one(ChatInput)
        inp.load_text("go on")
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.reply is not None and len(chat.reply.text) > 30, 30, "some tokens")
        assert "esc stops" in plain(chat.reply)
        await wait_until(pilot, lambda: "item 2" in plain(chat.reply), 30, "the list on screen")
        await pilot.press("escape")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the stop")
        await app.workers.wait_for_complete()
        reply = _turns(app)[-1]
        assert reply.stopped and reply.markdown and "[stopped]" in plain(reply) and "esc stops" not in plain(reply)
        assert plain(reply).endswith("[stopped]")
        last_item = reply.text.rstrip("\n").rsplit("\n", 1)[-1].lstrip("- ")
        assert last_item in plain(reply)  # the list as far as it went

        class Failing(FakeChat):
            def stream(self, prompt, sampling=None, stop=None, details=False):
                yield from list(super().stream(prompt, sampling, stop, details))[:-1]
                raise RuntimeError("the device is gone")

        app.chat_model = Failing(["**half", " a reply"])
        inp.load_text("again")
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.reply is None, 30, "the failure")
        await app.workers.wait_for_complete()
        failed = _turns(app)[-1]
        assert failed.error and "error: RuntimeError: the device is gone" in plain(failed)


async def test_raw_toggle_shows_every_reply_literally_and_is_remembered(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(REPLY))
        await _send(pilot, "first")
        await _send(pilot, "second")
        await pilot.press("f9")
        await pilot.pause()
        assert load_settings().markdown is False and app.settings.markdown is False
        for turn in _turns(app):
            assert not turn.markdown
            if turn.role == "assistant":
                assert not turn.query_one("Markdown").display  # kept, hidden: F9 again shows it at once
        reply = _turns(app)[-1]
        assert "## Steps" in plain(reply) and "```python" in plain(reply)  # the raw text, as the model wrote it
        await _send(pilot, "third")  # a new reply comes raw
        assert not _turns(app)[-1].markdown and not _turns(app)[-1].query("Markdown")
    # remembered: the next start shows replies raw; F9 again brings Markdown back
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(REPLY))
        await _send(pilot, "fourth")
        assert not _turns(app)[-1].markdown and "## Steps" in plain(_turns(app)[-1])
        await pilot.press("f9")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert _turns(app)[-1].markdown and "## Steps" not in plain(_turns(app)[-1])
        assert _blocks(_turns(app)[-1]) == ["MarkdownH2", "MarkdownOrderedList", "MarkdownFence", "MarkdownParagraph"]
        assert load_settings().markdown is True


async def test_copy_the_last_code_block(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    notes: list[str] = []
    original_notify = app.notify

    def notify(message, **kwargs):
        notes.append(message)
        original_notify(message, **kwargs)

    app.notify = notify
    async with app.run_test(size=(100, 40)) as pilot:
        await fake_ready(pilot, app, FakeChat(["no code here"]))
        await pilot.press("ctrl+l")  # no reply yet
        assert app.clipboard == "" and "No reply yet" in notes[-1]
        await _send(pilot, "prose please")
        await pilot.press("ctrl+l")
        assert app.clipboard == "" and "no code block" in notes[-1]
        code = ["First:\n", "```sh\n", "echo one\n", "```\n", "Then:\n", "~~~python\n", "x = '\x1b[31m'  # a control character\n", "\tprint(x)\n", "~~~\n", "done"]
        app.chat_model = FakeChat(code)
        await _send(pilot, "code please")
        await pilot.press("ctrl+l")
        assert app.clipboard == "x = '\x1b[31m'  # a control character\n\tprint(x)"  # the real text, exactly
        assert "python code block (2 lines)" in notes[-1]
        app.copy_to_clipboard("")
        await run_from_palette(pilot, "copy the last code", "Copy the last code block")
        await wait_until(pilot, lambda: app.clipboard.startswith("x = "), 10, "the palette's copy")


def test_last_code_block_reads_fences_as_markdown_does():
    assert last_code_block("no code") is None
    assert last_code_block("```\na\n```\ntext\n```js\nb\n```") == ("b", "js")
    assert last_code_block("~~~ python {.x}\nc\n~~~") == ("c", "python")
    assert last_code_block("unclosed:\n```py\nd = 1\ne = 2") == ("d = 1\ne = 2", "py")  # a stopped reply
    assert last_code_block("para\n\n    indented\n") == ("indented", "")
    assert last_code_block("````md\n```\ninner\n```\n````") == ("```\ninner\n```", "md")


async def test_a_link_in_a_reply_is_never_opened(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    opened: list[str] = []
    app.open_url = lambda url, **kwargs: opened.append(url)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["see [here](https://evil.test/x) now"]))
        await _send(pilot, "a link please")
        paragraph = _turns(app)[-1].query_one("MarkdownParagraph")
        assert paragraph.content.plain == "see here now"
        await pilot.click(paragraph, offset=(5, 0))  # on "here"
        await pilot.pause()
        assert opened == []
        notes = [n.message for n in app._notifications]
        assert any("not opened" in n and "https://evil.test/x" in n for n in notes), notes


def test_settings_markdown_field_loads_from_older_files():
    assert Settings.from_dict({}).markdown is True  # a file from before the toggle
    assert Settings.from_dict({"markdown": False}).markdown is False
    assert Settings.from_dict(Settings(markdown=False).to_dict()) == Settings(markdown=False)
    with pytest.raises(ValueError):
        Settings.from_dict({"markdown": "no"})


async def test_a_streaming_markdown_reply_is_always_as_tall_as_its_text(fresh_dirs, monkeypatch):
    """The paragraph and the code block being streamed are repainted in place and laid out again
    only when their height changes (tui/widgets/markdown_body.py): after every piece each is
    exactly as tall as its text, and the turn as tall as its header and body.  (The pieces come
    one at a time, each shown and laid out before the next: checked between an update and its
    layout, a block is not yet its new height on any path.)"""
    import tui.screens.chat as chat_screen
    from test_tui_chat import GatedChat
    from tui.safe import visible

    monkeypatch.setattr(chat_screen, "REPLY_UPDATE_INTERVAL_S", 0)  # every piece is posted
    pieces = [f"word{i} " + ("\n" if i % 9 == 8 else "") for i in range(60)] + ["\n\n```\n"] + [f"line {i}\n" for i in range(30)]
    model = GatedChat(pieces)
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(60, 40)) as pilot:
        chat = app.views["chat"]
        await fake_ready(pilot, app, model)
        inp = chat.query_one(ChatInput)
        inp.load_text("go")
        await pilot.press("enter")
        heights = set()
        await wait_until(pilot, lambda: chat.reply is not None, 10, "the reply")
        reply = chat.reply
        for n in range(1, len(pieces)):
            model.let(1)
            want = visible("".join(pieces[:n]))
            await wait_until(pilot, lambda: reply._md_shown == want, 10, f"piece {n} in the body")
            await pilot.pause()
            await pilot.pause()
            for block in reply.query("MarkdownParagraph, MarkdownFence Label"):
                width = block.content_size.width
                if block.is_mounted and width:
                    assert block.content_size.height == block.visual.get_height(block.styles, width), reply.text
            body = reply.query("Markdown")
            if body and body.first().is_mounted and reply.content_size.height:
                heights.add(body.first().outer_size.height)
        model.let(1)
        await wait_until(pilot, lambda: chat.reply is None, 10, "the end of the reply")
        assert len(heights) >= 4  # it grew while streaming
        await app.workers.wait_for_complete()
        await pilot.pause()
        reply = _turns(app)[-1]
        assert reply.content_size.height == reply.query_one(".turn-text").outer_size.height + reply.query_one("Markdown").outer_size.height
        assert "line 29" in plain(reply) and "word59" in plain(reply)
