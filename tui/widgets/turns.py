"""Chat widgets: the multi-line input with history, and one conversation turn."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static, TextArea

from tui.safe import literal


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


class TurnView(Static):
    """One turn.  Text is shown literally (see tui.safe)."""

    def __init__(self, role: str, text: str = "", who: str | None = None, stopped: bool = False, stop_key: str = "esc",
                 version: tuple[int, int] = (1, 1), edited: bool = False, **kwargs):
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

    def on_mount(self) -> None:
        self.update(self._render_text())

    def header_text(self) -> Text:
        """Who, the version marker ("2/3"; "\u25c2 2/3 \u25b8" on the turn the version keys switch),
        a correction's mark, and while streaming the key that stops it."""
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
            self.update(self._render_text())

    def _render_text(self) -> Text:
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

    def set_text(self, text: str) -> None:
        """New text (a streaming reply, ~20 times a second): the screen is laid out again only
        when the turn's height changes, otherwise only the turn is repainted (a layout of the
        whole screen per update took the decode's turns at the GIL; bench/app_latency.py)."""
        self.text = text
        width, height = self.content_size
        self.update(self._render_text(), layout=False)
        if not width or self.visual.get_height(self.styles, width) != height:
            self.refresh(layout=True)

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
        self.update(self._render_text())


class NoteView(Static):
    """A line of app information inside the conversation (not saved)."""

    def __init__(self, text: str):
        super().__init__(literal(text), classes="note")
