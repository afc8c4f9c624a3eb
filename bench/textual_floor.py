"""A bare Textual app (one line of text) that writes its first-frame time like minigpt-tui:
the floor under ``app.first_frame_ms`` on this machine (bench/app_latency.py launches both the
same way).  Run as ``python -m bench.textual_floor`` with ``MINIGPT_TUI_FIRST_FRAME`` set."""

from __future__ import annotations

import os
import sys
import time

from textual.app import App, ComposeResult
from textual.widgets import Static


class Floor(App):
    def compose(self) -> ComposeResult:
        yield Static("hello")

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        path = os.environ.get("MINIGPT_TUI_FIRST_FRAME")
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"{time.time():.6f} {int('torch' in sys.modules)}\n")
        self.exit(0)


if __name__ == "__main__":
    Floor().run()
