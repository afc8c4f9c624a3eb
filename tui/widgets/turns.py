"""Chat widgets: the multi-line input with history, and one conversation turn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static, TextArea

from tui.safe import literal, one_line, visible


class ChatInput(TextArea):
    """Enter sends; Ctrl+J (or Shift+Enter where the terminal reports it) inserts a newline.
    Up on the first line / Down on the last line walk the history of sent messages."""

    BINDINGS = [Binding("ctrl+j,shift+enter", "newline", "New line", id="chat.newline", show=False)]

    @dataclass
    class Submitted(Message):
        text: str

    def __init__(self, **kwargs):
        super().__init__(soft_wrap=True, tab_behavior="focus", show_line_numbers=False, compact=True, **kwargs)
        self.sent: list[str] = []
        self._pos: int | None = None  # index into history while browsing
        self._draft = ""

    def action_newline(self) -> None:
        self.insert("\n")

    def remember(self, text: str) -> None:
        if text and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._pos = None
        self._draft = ""

    def _show(self, text: str, at_end: bool) -> None:
        self.load_text(text)
        lines = text.split("\n")
        self.move_cursor((len(lines) - 1, len(lines[-1])) if at_end else (0, len(lines[0])))

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self.text))
            return
        row, _col = self.cursor_location
        if event.key == "up" and row == 0 and self.sent and self._pos != 0:
            event.stop()
            event.prevent_default()
            if self._pos is None:
                self._draft = self.text
                self._pos = len(self.sent)
            self._pos -= 1
            self._show(self.sent[self._pos], at_end=False)
            return
        if event.key == "down" and self._pos is not None and row == self.document.line_count - 1:
            event.stop()
            event.prevent_default()
            self._pos += 1
            if self._pos >= len(self.sent):
                self._pos = None
                self._show(self._draft, at_end=True)
            else:
                self._show(self.sent[self._pos], at_end=True)
            return
        await super()._on_key(event)


class TurnView(Widget):
    """One turn: a header line (who; "2/3" when the turn has versions; "written by you" on a reply
    the user wrote; while a reply streams, the key that stops it) and its text.

    User text is always shown literally (see tui.safe).  A reply is shown as Markdown (Textual's
    ``Markdown``, imported when the first one is shown: not in the first frame), or literally
    like user text when ``markdown`` is off (the chat's raw toggle: a base model's output is not
    Markdown).  Markdown gets the text with its control characters made visible (``visible``)
    and never opens a link (a click only says where it points): tui/widgets/markdown_body.py.

    Children: ``.turn-text``, a Static with the header and, when the text is literal, the text,
    the ``[stopped]`` mark and the error (one widget, as before Markdown); under Markdown it holds
    the header only, the ``Markdown`` body follows, then ``.turn-tail`` with the mark and error.
    """

    def __init__(self, role: str, text: str = "", who: str | None = None, stopped: bool = False, stop_key: str = "esc",
                 markdown: bool | None = None, version: tuple[int, int] = (1, 1), edited: bool = False, **kwargs):
        super().__init__(classes=f"turn {role}", **kwargs)
        self.version = version  # (which, of how many): "2/3" is shown when a turn has versions
        self.selected = False  # the turn whose versions the version keys switch
        self.edited = edited  # a reply the user wrote
        self.stop_key = stop_key  # named while the reply streams
        self.role = role
        self.who = who or ("You" if role == "user" else "Model")
        self.text = text
        self.stopped = stopped
        self.error: str | None = None
        self.streaming = False
        self.choices: list = []  # TokenChoice per token of a reply made in this session
        self.tokenizer = None  # decodes those token ids
        self._markdown = markdown  # None: the app's setting (settings.markdown), read at mount
        self._literal = Static(classes="turn-text")
        self._body = None  # the Markdown widget, once a reply is shown as Markdown
        self._tail: Static | None = None  # "[stopped]" and the error under the Markdown body
        self._md_target = ""  # what the body must show (visible text)
        self._md_shown = ""  # what it shows (all of it parsed and mounted)
        self._md_wake: asyncio.Event | None = None  # set: the body's worker has more to show
        self._head: Text | None = None  # the header last put in .turn-text under Markdown

    # --- what is shown ---
    @property
    def markdown(self) -> bool:
        """The text is shown as Markdown (a reply, with the Markdown setting on)."""
        if self.role == "user":
            return False
        if self._markdown is None:
            self._markdown = getattr(getattr(self.app, "settings", None), "markdown", True)
        return self._markdown

    def compose(self):
        yield self._literal

    def on_mount(self) -> None:
        self._show()

    def header_text(self) -> Text:
        """The turn's first line: who, the version marker ("2/3"; "\u25c2 2/3 \u25b8" on the turn
        the version keys switch), a correction's mark, and while the reply streams the key that
        stops it."""
        out = Text()
        out.append(self.who, style="bold")
        if self.edited:
            out.append("  written by you", style="italic")
        which, of = self.version
        if of > 1:
            marker = f"\u25c2 {which}/{of} \u25b8" if self.selected else f"{which}/{of}"
            out.append(f"  {marker}", style="bold reverse" if self.selected else "dim")
        if self.streaming:
            out.append(f"  \u2026 {self.stop_key} stops", style="dim")
        return out

    def set_version(self, version: tuple[int, int], selected: bool) -> None:
        if (version, selected) != (self.version, self.selected):
            self.version, self.selected = version, selected
            self.set_class(selected, "-selected")
            if self.is_mounted:
                self._show()

    def _render_text(self) -> Text:
        """The whole turn as literal text (user turns, and replies shown raw)."""
        out = self.header_text()
        out.append("\n")
        if self.text:
            out.append_text(literal(self.text))
        elif self.streaming:
            out.append("thinking\u2026", style="dim italic")
        if self.stopped:
            out.append("  [stopped]" if self.text else "[stopped]", style="bold yellow")
        if self.error:
            out.append("\n")
            out.append_text(literal(f"error: {self.error}", style="bold red"))
        return out

    def _markdown_head(self) -> Text:
        out = self.header_text()
        if not self.text and self.streaming:
            out.append("\n")
            out.append("thinking\u2026", style="dim italic")
        return out

    def _tail_text(self) -> Text:
        out = Text()
        if self.stopped:
            out.append("[stopped]", style="bold yellow")
        if self.error:
            if self.stopped:
                out.append("\n")
            out.append_text(literal(f"error: {self.error}", style="bold red"))
        return out

    def _show(self) -> None:
        """Everything again (mount, finish, the raw toggle)."""
        if not self.markdown:
            self._head = None
            self._literal.update(self._render_text())
            for widget in (self._body, self._tail):
                if widget is not None:
                    widget.display = False
            if self._md_wake is not None:
                self._md_wake.set()  # the body's worker sees the raw view and ends
            self.text_shown()
            return
        self._update_head()
        if not (self.is_attached and self.display):  # being removed (the app quits, the chat changes): nothing to mount into
            return
        tail = self._tail_text()
        if tail.plain and self._tail is None:
            self._tail = Static(tail, classes="turn-tail")
            self.mount(self._tail)
        elif self._tail is not None:
            self._tail.update(tail)
            self._tail.display = bool(tail.plain)
        if self._body is not None:
            self._body.display = True
        self._sync_body()

    def _update_head(self) -> None:
        head = self._markdown_head()
        if head != self._head:
            self._head = head
            self._literal.update(head)

    def set_markdown(self, on: bool) -> None:
        """Show a reply as Markdown or as its raw text (user turns stay literal)."""
        if self.role == "user" or on == self.markdown:
            return
        self._markdown = on
        self._show()

    def set_text(self, text: str) -> None:
        """New text (a streaming reply, ~20 times a second).  Literal: the screen is laid out
        again only when the turn's height changes, otherwise only the turn is repainted (a layout
        of the whole screen per update took the decode's turns at the GIL; bench/app_latency.py).
        Markdown: the new end of the text is appended (only the last block is parsed again)."""
        self.text = text
        if self.markdown:
            self._update_head()
            self._sync_body()
            return
        widget = self._literal
        width, height = widget.content_size
        widget.update(self._render_text(), layout=False)
        if not width or widget.visual.get_height(widget.styles, width) != height:
            widget.refresh(layout=True)
        self.text_shown()

    def finish(self, text: str | None = None, stopped: bool = False, error: str | None = None) -> None:
        if text is not None:
            self.text = text
        self.streaming = False
        self.stopped = stopped
        self.error = error
        if stopped:
            self.add_class("stopped")
        if error:
            self.add_class("failed")
        self._show()

    def text_shown(self) -> None:
        """Called whenever the screen has all of ``text`` (a literal update, or the Markdown body
        caught up with it).  Does nothing: a hook for the benchmark (bench/app_latency.py)."""

    # --- the Markdown body ---
    def _sync_body(self) -> None:
        """Bring the Markdown body up to ``text``.  One worker per reply does it, from the turn's
        mount (the body is mounted while the model thinks, not when the first piece comes) until
        it has shown the finished reply; updates that come while it works are taken together (the
        newest text wins), so a slow parse never queues a backlog."""
        self._md_target = visible(self.text)
        if self._md_wake is not None:  # the worker is on it
            self._md_wake.set()
            return
        if self._md_target == self._md_shown and (self._body is not None or not (self._md_target or self.streaming)):
            self.text_shown()
            return
        self._md_wake = asyncio.Event()
        self._md_wake.set()
        self.run_worker(self._keep_body_up_to_date(self._md_wake), group="turn-markdown", exit_on_error=True)

    async def _keep_body_up_to_date(self, wake: asyncio.Event) -> None:
        """Only ``Markdown.append``, from an empty document: it parses again from the start of the
        last block it made (after ``update`` an append replaced the last block with the new
        text's first: ``update`` leaves its place at the document's end)."""
        try:
            while self.markdown:
                await wake.wait()
                wake.clear()
                if not self.markdown:  # raw text now: F9 again starts a worker
                    break
                if not (self.is_attached and self.display):  # being removed
                    break
                if self._body is None:
                    self._body = self._new_body()
                    await self.mount(self._body, after=self._literal)
                    if self.streaming and not self._md_target:
                        await self._body.prepare()  # while the model thinks
                        self._mark_first_block()
                target = self._md_target
                if target != self._md_shown:
                    if target.startswith(self._md_shown):
                        await self._body.append(target[len(self._md_shown):])
                    else:  # not a continuation (the final text decoded again): a new body
                        await self._replace_body(target)
                    self._md_shown = target
                    self._mark_first_block()
                if self._md_target != self._md_shown:
                    wake.set()  # more came meanwhile
                    continue
                if self._md_shown or not self.streaming:
                    self.text_shown()
                if not self.streaming:
                    break
        finally:
            self._md_wake = None

    def _new_body(self):
        from tui.widgets.markdown_body import ReplyMarkdown

        self._md_shown = ""
        return ReplyMarkdown(classes="turn-md")

    async def _replace_body(self, text: str) -> None:
        """A new body showing ``text`` in place of the old one, swapped in one frame."""
        old, new = self._body, self._new_body()
        new.display = False
        with self.app.batch_update():
            await self.mount(new, after=old)
            await new.append(text)
            self._body = new
            new.display = True
            await old.remove()

    def _mark_first_block(self) -> None:
        """The body's first block has no margin above it (.-first-block in app.tcss).  Blocks
        are added at the end, and only the last one is replaced: the first changes rarely."""
        first = self._body.children[0] if self._body.children else None
        if first is not None and not first.has_class("-first-block"):
            first.add_class("-first-block")

    def on_markdown_link_clicked(self, event) -> None:
        """Links in a reply are the model's: never opened, only shown."""
        event.stop()
        self.app.notify(f"Links in replies are not opened: {one_line(event.href, 200)}", timeout=5)

    def shown_text(self) -> str:
        """The turn's text as the screen shows it, without styles (header, text, marks)."""
        lines = [_plain(self._literal)]
        if self.markdown and self._body is not None:
            lines += [_plain(block) for block in self._body.query(Static) if not block.query(Static)]
            if self._tail is not None and self._tail.display:
                lines.append(_plain(self._tail))
        return "\n".join(line for line in lines if line)


def _plain(widget: Static) -> str:
    content = widget.content
    return content.plain if hasattr(content, "plain") else str(content)


def last_code_block(text: str) -> tuple[str, str] | None:
    """(code, language) of the last code block of ``text`` read as Markdown (fenced with ```
    or ~~~, or indented, as the Markdown view shows them; an unclosed fence runs to the end),
    or None."""
    from tui.widgets.markdown_body import chat_parser

    blocks = [t for t in chat_parser().parse(text) if t.type in ("fence", "code_block")]
    if not blocks:
        return None
    last = blocks[-1]
    language = last.info.split()[0] if last.info.split() else ""
    return last.content.rstrip("\n"), language


class NoteView(Static):
    """A line of app information inside the conversation (not saved)."""

    def __init__(self, text: str):
        super().__init__(literal(text), classes="note")
