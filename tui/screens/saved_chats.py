"""Saved conversations (a modal): open, rename, delete, export to Markdown; export and import
JSONL in the ``messages`` format (training data: ``tui.store.chat_jsonl``)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static

from tui.store.conversations import ConversationStore
from tui.screens.dialogs import ConfirmScreen, PromptScreen
from tui.messages import ConversationDeleted
from tui.safe import one_line
from tui.keymap import with_keys


class ConversationsScreen(ModalScreen[tuple[int, int | None] | None]):
    """Dismisses with (the conversation to open, the message whose branch to show: a search
    hit's, or None), or None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="conv.close"),
        Binding("r", "rename", "Rename", id="conv.rename"),
        Binding("d,delete", "delete", "Delete", id="conv.delete"),
        Binding("e", "export", "Export Markdown", id="conv.export"),
        Binding("j", "export_jsonl", "Export JSONL", id="conv.export_jsonl"),
        Binding("a", "export_all_jsonl", "Export all (JSONL)", id="conv.export_all_jsonl"),
        Binding("i", "import_jsonl", "Import JSONL", id="conv.import_jsonl"),
        Binding("slash", "search", "Search", id="conv.search"),
    ]

    def __init__(self, store: ConversationStore, current: int | None = None):
        super().__init__(classes="dialog-screen")
        self.store, self.current = store, current
        self.loaded: str | None = None  # the search text of the rows shown (None: not read yet)
        self.hits: dict[int, int | None] = {}  # conversation id -> the message a search found

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="conversations-dialog"):
            yield Label("Conversations", classes="dialog-title")
            yield Static(
                Text(with_keys(self.app, "Enter open \u00b7 <conv.rename> rename \u00b7 <conv.delete> delete \u00b7 <conv.search> search \u00b7 "
                               "<conv.export> Markdown \u00b7 <conv.export_jsonl> JSONL \u00b7 <conv.export_all_jsonl> all as JSONL \u00b7 <conv.import_jsonl> import JSONL")),
                id="conversations-keys", classes="hint",
            )
            yield Input(placeholder=with_keys(self.app, "search every message (<conv.search>)"), id="conversations-search", compact=True)
            yield DataTable(id="conversations-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="conversations-note")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("title", key="title")
        table.add_column("checkpoint", key="checkpoint")
        table.add_column("turns", key="turns")
        table.add_column("updated", key="updated")
        table.add_column("match", key="match")
        self.reload()
        table.focus()

    def reload(self) -> None:
        """List (or search) on a worker: the database is never read on the UI's time."""
        text = self.query_one("#conversations-search", Input).value
        self.run_worker(lambda: self._read(text), thread=True, group="conversations", exclusive=True, exit_on_error=False)

    def _read(self, text: str) -> None:
        convs = self.store.search(text) if text.strip() else self.store.list()
        self.app.call_from_thread(self._show, text, convs)

    def _show(self, text: str, convs) -> None:
        if text != self.query_one("#conversations-search", Input).value:
            return  # typed on since: a newer search is on its way
        table = self.query_one(DataTable)
        table.clear()
        self.hits = {c.id: c.hit for c in convs}
        for c in convs:
            cells = (one_line(c.title, 40), one_line(c.checkpoint or "-", 24), str(c.messages), c.updated[:16].replace("T", " "), one_line(c.snippet, 60))
            table.add_row(*(Text(cell) for cell in cells), key=str(c.id))  # Text: never markup
        note = "No saved conversations yet." if not convs and not text.strip() else f"Nothing matches {text.strip()!r}." if not convs else ""
        self.query_one("#conversations-note", Static).update(Text(note))
        self.loaded = text

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search opens the highlighted hit (the best, unless moved to another);
        while the results for what is typed are not in yet, it goes to the list."""
        event.stop()
        table = self.query_one(DataTable)
        cid = self._selected()
        if self.loaded == event.value and cid is not None:
            self.dismiss((cid, self.hits.get(cid)))
        else:
            table.focus()

    def action_search(self) -> None:
        self.query_one("#conversations-search", Input).focus()

    def _selected(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        cid = int(event.row_key.value)
        self.dismiss((cid, self.hits.get(cid)))

    def action_rename(self) -> None:
        cid = self._selected()
        conv = self.store.get(cid) if cid is not None else None
        if conv is None:
            return

        def done(title: str | None) -> None:
            if title:
                self.store.rename(cid, title)
                self.reload()

        self.app.push_screen(PromptScreen("Rename conversation", conv.title, lambda v: None if v else "the title cannot be empty"), done)

    def action_delete(self) -> None:
        cid = self._selected()
        conv = self.store.get(cid) if cid is not None else None
        if conv is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.store.delete(cid)
                self.app.notify(f"Deleted conversation {one_line(conv.title, 40)!r}")
                if cid == self.current:
                    self.current = None
                    self.app.post_message(ConversationDeleted(cid))
                self.reload()

        self.app.push_screen(ConfirmScreen(f"Delete the conversation '{conv.title}'?", yes="Delete"), done)

    def action_export(self) -> None:
        cid = self._selected()
        if cid is not None:
            self._write_file("Export to Markdown file", self.store.default_export_path(cid),
                             lambda path, overwrite: f"Exported to {self.store.export(cid, path, overwrite=overwrite)}")

    # --- JSONL: training data (tui.store.chat_jsonl) ---
    def action_export_jsonl(self) -> None:
        cid = self._selected()
        if cid is not None:
            self._export_jsonl([cid], "Export this chat as JSONL (training data)")

    def action_export_all_jsonl(self) -> None:
        self._export_jsonl(None, "Export every saved chat as JSONL (training data)")

    def _export_jsonl(self, ids: list[int] | None, title: str) -> None:
        from tui.store.chat_jsonl import default_jsonl_path, export_jsonl

        self._write_file(title, default_jsonl_path(self.store, ids[0] if ids else None),
                         lambda path, overwrite: one_line(export_jsonl(self.store, ids, path, overwrite=overwrite).summary(), 300))

    def _write_file(self, title: str, default: Path, write) -> None:
        """Ask for a path (``default`` filled in), then ``write(path, overwrite)``, which returns
        what to tell the user.  An existing file is overwritten only when the user says so; a
        file that cannot be written, or nothing to write (ValueError: chat_jsonl.ChatFileError),
        is said in one line."""

        def attempt(path_text: str | None, overwrite: bool = False) -> None:
            if not path_text:
                return
            path = Path(path_text).expanduser()
            try:
                told = write(path, overwrite)
            except FileExistsError:
                self.app.push_screen(
                    ConfirmScreen(f"{path} exists. Overwrite it?", yes="Overwrite"),
                    lambda yes: attempt(path_text, overwrite=True) if yes else self.app.notify("Export cancelled"),
                )
                return
            except ValueError as exc:
                self.app.notify(one_line(f"Nothing exported: {exc}", 300), severity="warning")
                return
            except OSError as exc:
                self.app.notify(f"Could not export: {exc.strerror or exc}", severity="error")
                return
            self.app.notify(told)

        self.app.push_screen(PromptScreen(title, str(default), lambda v: None if v else "give a file path"), attempt)

    def action_import_jsonl(self) -> None:
        from tui.store.chat_jsonl import ChatFileError, default_jsonl_path, import_jsonl

        def read(path_text: str | None) -> None:
            if not path_text:
                return
            try:
                done = import_jsonl(self.store, Path(path_text))
            except ChatFileError as exc:
                self.app.notify(one_line(f"Nothing imported: {exc}", 300), severity="error", timeout=10)
                return
            except OSError as exc:
                self.app.notify(f"Could not import: {exc.strerror or exc}", severity="error")
                return
            self.app.notify(one_line(done.summary(), 300), severity="information" if done.chats else "warning")
            self.reload()

        def check(value: str) -> str | None:
            if not value:
                return "give a file path"
            return None if Path(value).expanduser().is_file() else f"no such file: {value}"

        self.app.push_screen(PromptScreen("Import chats from a JSONL file ({\"messages\": [...]} a line)", str(default_jsonl_path(self.store)), check), read)
