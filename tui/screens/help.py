"""The help screen: every key, and where files live.

The keys are the app's bindings as they are now (a keymap moves them here too), grouped by the
first part of their id (``chat.new`` -> Chat).  A binding added anywhere in ``tui/`` shows up by
itself, described by its ``EXPLAIN`` entry or else by its own description; the few keys that
are not bindings (Enter to send, the input's history) are the ``EXTRA`` rows.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from tui.keymap import binding_owners, declared, key_label, keys_for, with_keys

# id prefix -> section title (texts name keys by id: <app.chat>); sections in this order, several
# prefixes may share one; a prefix not here gets a section of its own at the end.
SECTIONS = {
    "app": "Everywhere",
    "chat": "Chat (<app.chat>)",
    "train": "Training (<app.training>)",
    "ckpt": "Checkpoints (<app.checkpoints>)",
    "compare": "Compare (<ckpt.compare> in <app.checkpoints>)",
    "conv": "Saved chats (<app.conversations>)",
    "inspect": "Token inspector (<chat.inspect>)",
    "sampling": "Dialogs",
    "confirm": "Dialogs",
    "prompt": "Dialogs",
    "details": "Dialogs",
    "help": "Dialogs",
}

# binding id -> what it does, longer than the footer's description (which is used without one)
EXPLAIN = {
    "app.chat": "the chat",
    "app.training": "training: start a run, watch it learn",
    "app.checkpoints": "checkpoints: every saved run",
    "app.sampling": "sampling settings",
    "app.conversations": "saved chats",
    "app.help": "this help (the same key closes it)",
    "app.theme": "switch light / dark theme",
    "app.quit": "quit (a training run is saved first; pressed again: at once, without that save)",
    "chat.stop": "stop the reply (the partial reply is kept, marked stopped)",
    "chat.new": "new chat",
    "chat.train_default": "train the default model (first run)",
    "chat.copy": "copy the last reply (works over SSH too)",
    "chat.copy_code": "copy the last code block of the last reply",
    "chat.raw": "replies as raw text / as Markdown (remembered; your messages are always shown as typed)",
    "chat.regenerate": "regenerate the last reply (a new version; the earlier one is kept)",
    "chat.edit": "edit the last message: sent, it is a new version with its own reply (the earlier one is kept)",
    "chat.correct": "correct the last reply: your text becomes its new version, marked as written by you (train on it)",
    "chat.prev_version": "the previous version of the marked turn (\u25c2 2/3 \u25b8)",
    "chat.next_version": "the next version of the marked turn",
    "chat.prev_branch": "mark an earlier turn that has versions",
    "chat.next_branch": "mark a later turn that has versions",
    "chat.system": "the chat's system prompt (sent before its turns; a new chat starts without one)",
    "chat.inspect": "token inspector: the last reply coloured by each token's probability, the top 10 at each token",
    "chat.newline": "new line in the message",
    "train.start": "start the run in the form",
    "train.pause": "pause / resume",
    "train.stop": "stop (saves a checkpoint first)",
    "train.log_scale": "log scale for the loss chart",
    "ckpt.use": "make the highlighted model active (chat uses it at once)",
    "ckpt.delete": "delete (asks first)",
    "ckpt.resume": "resume training",
    "ckpt.sort": "sort by the next column (or click a column header)",
    "ckpt.compare": "compare: the highlighted checkpoint and the active one answer the same prompt side by side",
    "compare.close": "back to the checkpoints",
    "compare.stop": "stop both replies",
    "conv.delete": "delete (asks first)",
    "conv.export": "export to Markdown (asks before overwriting)",
    "conv.search": "search every message",
    "inspect.prev": "previous token (or click a token)",
    "inspect.first": "first token",
    "inspect.last": "last token",
    "sampling.cancel": "close the sampling settings without saving",
    "confirm.yes": "yes, to a question",
    "confirm.no": "no",
    "confirm.cancel": "no (cancel the question)",
    "prompt.cancel": "cancel a dialog that asks for a value",
    "details.close": "close the details",
    "help.close": "close this help",
}

# Keys that are not bindings, by section prefix: (key, what), shown before the section's bindings.
# ``None`` as the key: the command palette's (``App.COMMAND_PALETTE_BINDING``).
EXTRA = {
    "app": [(None, "command palette: screens, actions, \"Use <checkpoint>\", \"Open <saved chat>\"")],
    "chat": [
        ("Enter", "send (on an empty input with no model yet: train the default model)"),
        ("\u2191 / \u2193", "previous / next sent message (on the first / last line of the input)"),
    ],
    "conv": [("Enter", "open the highlighted chat")],
}


def _described(binding) -> str:
    text = binding.description or binding.action
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def help_rows(app) -> list[tuple[str, str, str]]:
    """(keys, what, binding id) for every key, with (section title, "", "") before each section:
    the keys each binding has now, in prose (``tui.keymap``); a key that is no binding has no id."""
    bindings = declared(binding_owners())
    order = list(dict.fromkeys(list(SECTIONS.values()) + [p.capitalize() for p in dict.fromkeys(i.split(".")[0] for i in bindings) if p not in SECTIONS]))
    sections: dict[str, list[tuple[str, str, str]]] = {title: [] for title in order}
    for prefix in SECTIONS:
        for key, what in EXTRA.get(prefix, []):
            sections[SECTIONS[prefix]].append((key_label(app.COMMAND_PALETTE_BINDING) if key is None else key, what, ""))
    for binding_id, (_owner, binding) in bindings.items():
        prefix = binding_id.split(".")[0]
        title = SECTIONS.get(prefix, prefix.capitalize())
        sections[title].append((keys_for(app, binding_id), EXPLAIN.get(binding_id) or _described(binding), binding_id))
    rows = []
    for title in order:
        if sections[title]:
            rows.append((with_keys(app, title), "", ""))
            rows += sections[title]
    return rows


def keys_table(app) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")  # the id a keymap names
    for key, what, binding_id in help_rows(app):
        if not what:
            table.add_row(Text(key, style="bold underline"), "", "keymap id" if table.row_count == 0 else "")
        else:
            table.add_row(Text(key), Text(what), binding_id)
    return table


class HelpScreen(ModalScreen[None]):
    # (the key that opens the help, app.help, closes it too: MiniGPTApp.action_help)
    BINDINGS = [Binding("escape,q", "dismiss(None)", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        from engine.store import paths

        with Vertical(classes="dialog wide", id="help"):
            yield Label("minigpt-tui \u2014 keys", classes="dialog-title")
            with VerticalScroll(classes="details-body"):
                yield Static(keys_table(self.app), id="help-keys")
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
