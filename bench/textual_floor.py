"""Bare Textual apps that write their first-frame time like minigpt-tui: the floors under
``app.first_frame_ms`` on this machine (bench/app_latency.py launches them the same way).

* ``python -m bench.textual_floor``: one line of text, the least a Textual app paints.
* ``python -m bench.textual_floor --chat KEYS``: the widgets of the app's first screen, from
  Textual alone (a status line, a scrolling view, a ``TextArea`` input with focus, a ``Footer``
  showing the same keys, given as JSON ``[[key, description], ...]``): what Textual itself takes
  to paint that screen, without the app's modules, styles or start-up work.

Run with ``MINIGPT_TUI_FIRST_FRAME`` set."""

from __future__ import annotations

import json
import os
import sys
import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Static


def _write_first_frame() -> None:
    path = os.environ.get("MINIGPT_TUI_FIRST_FRAME")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{time.time():.6f} {int('torch' in sys.modules)}\n")


class Floor(App):
    def compose(self) -> ComposeResult:
        yield Static("hello")

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        _write_first_frame()
        self.exit(0)


def chat_floor(keys: list[list[str]]) -> App:
    """A bare app with the chat screen's widgets and a footer of ``keys``."""
    from textual.containers import VerticalScroll
    from textual.widgets import Footer, TextArea

    class ChatFloor(Floor):
        CSS = "#status { height: 1; } #input { height: 3; }"
        BINDINGS = [Binding(key, "bell", description) for key, description in keys]

        def compose(self) -> ComposeResult:
            yield Static("model · decode · ctx", id="status")
            yield VerticalScroll()
            yield TextArea(id="input")
            yield Footer()

        def on_mount(self) -> None:
            self.query_one(TextArea).focus()
            super().on_mount()

    return ChatFloor()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--chat":
        chat_floor(json.loads(sys.argv[2])).run()
    else:
        Floor().run()
