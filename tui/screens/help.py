"""The help screen: every key, and where files live."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

KEYS = [
    ("Everywhere", ""),
    ("F1 / F2 / F3", "chat / training / checkpoints"),
    ("F4", "sampling settings"),
    ("F5", "saved conversations"),
    ("F6", "this help"),
    ("F7", "switch light / dark theme"),
    ("Ctrl+P", "command palette"),
    ("Ctrl+Q", "quit (a training run is saved first)"),
    ("Chat", ""),
    ("Enter", "send"),
    ("Ctrl+J  (or Shift+Enter)", "new line in the message"),
    ("Up / Down", "previous / next sent message (on the first / last line)"),
    ("Esc", "stop the reply (the partial reply is kept, marked stopped)"),
    ("Ctrl+N", "new chat"),
    ("Ctrl+O", "copy the last reply (works over SSH too)"),
    ("Ctrl+L", "copy the last code block of the last reply"),
    ("F9", "replies as raw text / as Markdown (remembered; your messages are always shown as typed)"),
    ("Ctrl+R", "regenerate the last reply"),
    ("Ctrl+G", "edit the last message (it and its reply go back to the input)"),
    ("Ctrl+S", "the chat's system prompt (sent before its turns; a new chat starts without one)"),
    ("F8", "token inspector: the last reply coloured by each token's probability; ←/→ or a click shows the top 10 there"),
    ("Ctrl+T", "train the default model (first run)"),
    ("Training", ""),
    ("Ctrl+R", "start the run in the form"),
    ("Ctrl+B", "pause / resume"),
    ("Ctrl+S", "stop (saves a checkpoint first)"),
    ("Checkpoints", ""),
    ("Enter", "make the highlighted model active (chat uses it at once)"),
    ("i / r / d / t", "details / rename / delete / resume training"),
    ("s", "sort by the next column (or click a column header)"),
    ("c", "compare: the highlighted checkpoint and the active one answer the same prompt side by side"),
    ("Conversations (F5)", ""),
    ("Enter / r / d / e", "open / rename / delete / export to Markdown"),
]


def keys_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for key, what in KEYS:
        if not what:
            table.add_row(Text(key, style="bold underline"), "")
        else:
            table.add_row(key, what)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f6,q", "dismiss(None)", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        from engine.store import paths

        with Vertical(classes="dialog wide", id="help"):
            yield Label("minigpt-tui \u2014 keys", classes="dialog-title")
            with VerticalScroll(classes="details-body"):
                yield Static(keys_table())
                yield Static(
                    Text.assemble(
                        ("\nFiles\n", "bold underline"),
                        f"checkpoints    {paths.checkpoints_dir()}\n",
                        f"conversations  {paths.conversations_db()}\n",
                        f"settings       {paths.settings_file()}\n",
                        f"keymap         {paths.keymap_file()}  (binding id -> keys, e.g. {{\"chat.copy\": \"ctrl+k\"}})\n",
                    ),
                    id="help-files",
                )
            yield Button("Close", variant="primary", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)
