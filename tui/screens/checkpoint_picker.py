"""The checkpoint picker: saved checkpoints (sortable, broken ones with their reason) and
models found in the local Hugging Face cache."""

from __future__ import annotations

import json

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Label, Static
from textual.worker import get_current_worker

from tui.screens.dialogs import ConfirmScreen, DetailsScreen, PromptScreen
from tui.widgets.footer import AppFooter
from tui.keymap import with_keys
from tui.safe import literal, one_line

COLUMNS = [
    # key, title, sort value of a CheckpointInfo
    ("name", "name", lambda c: c.name.lower()),
    ("preset", "preset", lambda c: c.record.preset or ""),
    ("chat", "chat", lambda c: 0 if c.record.chat else 1),  # a chat model (chat template) first
    ("params", "params", lambda c: c.record.params or 0),
    ("dataset", "dataset", lambda c: c.record.dataset or c.broken or ""),
    ("steps", "steps", lambda c: c.record.steps),
    ("val_loss", "val loss", lambda c: _num(c.record.val_loss)),
    ("perplexity", "ppl", lambda c: _num(c.record.perplexity)),
    ("word_perplexity", "word ppl", lambda c: _num(c.record.word_perplexity)),
    ("bpb", "bits/byte", lambda c: _num(c.record.bits_per_byte)),
    # chat models' evaluation (engine.evaluation.chat_scores): replies that ended their turn, true reply ranked first
    ("eot_rate", "end-of-turn", lambda c: _num(c.record.eot_rate)),
    ("ranking_top1", "ranking", lambda c: _num(c.record.ranking_top1)),
    ("created", "created", lambda c: c.record.created or ""),
    ("size", "size", lambda c: c.size_bytes),
]


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) else float("inf")


def fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _fmt(x, digits) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x * 100:.0f}%"


def row_cells(info, active: str | None) -> list:
    """The table cells; plain strings become Text (DataTable would parse a str as markup)."""
    return [c if isinstance(c, Text) else Text(str(c)) for c in _cells(info, active)]


def _cells(info, active: str | None) -> list:
    m = info.record
    name = Text(("\u25cf " if info.name == active else "  ") + one_line(info.name, 40), style="bold" if info.name == active else "")
    if not info.ok:
        return [
            name,
            Text("BROKEN", style="bold red"),
            "-",
            "-",
            literal(one_line(info.broken or "", 60), style="red"),
            "-", "-", "-", "-", "-", "-", "-",
            one_line(m.created or "-", 16).replace("T", " ")[:16],
            fmt_size(info.size_bytes),
        ]
    return [
        name,
        one_line(m.preset or "-", 10),
        "yes" if m.chat else "",
        f"{m.params / 1e6:.2f}M" if m.params is not None else "-",
        one_line(m.dataset or "-", 20),
        str(m.steps),
        _fmt(m.val_loss, 3),
        _fmt(m.perplexity, 1),
        _fmt(m.word_perplexity, 1),
        _fmt(m.bits_per_byte, 3),
        _pct(m.eot_rate),
        _pct(m.ranking_top1),
        (m.created or "-").replace("T", " ")[:16],
        fmt_size(info.size_bytes),
    ]


class CheckpointsScreen(Screen):
    BINDINGS = [
        # Priority: the focused table's own Enter (hidden) would take the key, and the footer
        # would never say how to use a checkpoint; action_activate serves both tables.
        Binding("enter", "activate", "Use", id="ckpt.use", show=True, priority=True),
        Binding("i", "details", "Details", id="ckpt.details"),
        Binding("r", "rename", "Rename", id="ckpt.rename"),
        Binding("d,delete", "delete", "Delete", id="ckpt.delete"),
        Binding("t", "resume", "Resume training", id="ckpt.resume"),
        Binding("s", "sort", "Sort", id="ckpt.sort"),
        Binding("c", "compare", "Compare", id="ckpt.compare"),
    ]

    def __init__(self):
        super().__init__(id="checkpoints-screen")
        self.infos: list = []
        self.hf_models: list[dict] = []
        self.sort_index = 0
        self.sort_reverse = False
        self.loaded = False  # the first listing has arrived

    def compose(self) -> ComposeResult:
        yield Static("", id="ckpt-status")
        with Vertical(id="ckpt-body"):
            yield Label("Saved checkpoints", classes="section-title")
            yield DataTable(id="ckpt-table", cursor_type="row", zebra_stripes=True)
            yield Label("Hugging Face cache", classes="section-title")
            yield DataTable(id="hf-table", cursor_type="row", zebra_stripes=True)
        yield AppFooter()

    def on_mount(self) -> None:
        self.app.views["checkpoints"] = self
        table = self.query_one("#ckpt-table", DataTable)
        for key, title, _ in COLUMNS:
            table.add_column(title, key=key)
        hf = self.query_one("#hf-table", DataTable)
        hf.add_column("model", key="repo")
        hf.add_column("size", key="size")
        hf.add_column("path", key="path")
        hf.add_row(Text("looking\u2026", style="dim"), "", "", key="-")
        self.reload()
        self.run_worker(self._scan_hf_cache, thread=True, group="hf-scan", exit_on_error=False)
        # the active model's mark follows the app; the list follows the store
        self.watch(self.app, "model_revision", self._fill, init=False)
        self.watch(self.app, "store_revision", self.reload, init=False)
        table.focus()

    def on_screen_resume(self) -> None:
        self.reload()

    # --- data ---
    def reload(self) -> None:
        """List the store on a worker (it walks every folder and may recover an interrupted
        save): the UI never waits for the disk.  A newer listing cancels an older one."""
        self._list_checkpoints()

    @work(thread=True, exclusive=True, group="ckpt-list", exit_on_error=False)
    def _list_checkpoints(self) -> None:
        from engine.store.checkpoints import CheckpointStore

        error = None
        try:
            infos = CheckpointStore().list()
        except OSError as exc:
            infos, error = [], f"Cannot read the checkpoint folder: {exc.strerror or exc}"
        self.app.call_from_thread(self._listed, get_current_worker(), infos, error)

    def _listed(self, worker, infos: list, error: str | None) -> None:
        if worker.is_cancelled:  # a newer listing is under way (cancelled on this thread: no race)
            return
        if error:
            self.app.notify(error, severity="error")
        self.infos = infos
        self.loaded = True
        self._fill()

    def _sorted(self) -> list:
        _key, _title, value = COLUMNS[self.sort_index]
        good = sorted((i for i in self.infos if i.ok), key=value, reverse=self.sort_reverse)
        broken = sorted((i for i in self.infos if not i.ok), key=lambda i: i.name.lower())
        return good + broken

    def _fill(self) -> None:
        table = self.query_one("#ckpt-table", DataTable)
        current = self._selected_name()
        table.clear()
        for key, title, _ in COLUMNS:
            col = table.columns[key]
            arrow = (" \u25bc" if self.sort_reverse else " \u25b2") if COLUMNS[self.sort_index][0] == key else ""
            col.label = Text(title + arrow)
        active = self.app.active_name if self.app.active_kind == "checkpoint" else None
        for info in self._sorted():
            table.add_row(*row_cells(info, active), key=info.name)
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current))
        n_broken = sum(1 for i in self.infos if not i.ok)
        status = Text()
        status.append("Checkpoints: ", style="bold")
        status.append(f"{len(self.infos)} saved" if self.infos else with_keys(self.app, "none saved yet (<app.training> to train one)"))
        if n_broken:
            status.append(f", {n_broken} broken", style="red")
        status.append("  \u2502  active: ", style="dim")
        status.append_text(literal(one_line(self.app.active_name or "none", 40)))
        self.query_one("#ckpt-status", Static).update(status)

    def _scan_hf_cache(self) -> None:
        from engine.store.checkpoints import hf_cache_models

        found = hf_cache_models()
        self.app.call_from_thread(self._fill_hf, found)

    def _fill_hf(self, found: list[dict]) -> None:
        self.hf_models = found
        hf = self.query_one("#hf-table", DataTable)
        hf.clear()
        if not found:
            hf.add_row(Text("no models in the local Hugging Face cache", style="dim"), "", "", key="-")
        for m in found:
            hf.add_row(literal(one_line(m["repo_id"], 50)), Text(fmt_size(int(m.get("size_bytes") or 0))), literal(one_line(m["path"], 80)), key=m["path"])

    def _selected_name(self) -> str | None:
        table = self.query_one("#ckpt-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None

    def _selected_info(self):
        name = self._selected_name()
        return next((i for i in self.infos if i.name == name), None)

    # --- sorting ---
    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table.id != "ckpt-table":
            return
        event.stop()
        index = next(i for i, c in enumerate(COLUMNS) if c[0] == event.column_key.value)
        if index == self.sort_index:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_index, self.sort_reverse = index, False
        self._fill()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(COLUMNS)
        self.sort_reverse = False
        self._fill()
        self.app.notify(f"Sorted by {COLUMNS[self.sort_index][1]}", timeout=1.5)

    # --- actions ---
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.data_table.id == "hf-table":
            self._use_hf_model(event.row_key.value)
            return
        self.action_activate()

    def _use_hf_model(self, path: str) -> None:
        model = next((m for m in self.hf_models if m["path"] == path), None)
        if model:
            self.app.activate_folder(model["path"], model["repo_id"])
            self.app.switch_mode("chat")

    def action_activate(self) -> None:
        if self.focused is not None and self.focused.id == "hf-table":
            hf = self.query_one("#hf-table", DataTable)
            if hf.row_count:
                self._use_hf_model(hf.coordinate_to_cell_key(hf.cursor_coordinate).row_key.value)
            return
        info = self._selected_usable()
        if info is None:
            return
        self.app.activate_checkpoint(info.name)
        self.app.switch_mode("chat")

    def action_details(self) -> None:
        info = self._selected_info()
        if info is None:
            return
        body = Text()
        body.append_text(literal(f"path: {info.path}\nsize: {fmt_size(info.size_bytes)}\n"))
        body.append_text(literal(f"resumable: {'yes' if info.resumable else 'no'}\n"))
        if not info.ok:
            body.append_text(literal(f"BROKEN: {info.broken}\n", style="bold red"))
        if info.meta:
            body.append("\n")
            body.append_text(literal(json.dumps(info.meta, indent=2, sort_keys=True, default=str)))
        self.app.push_screen(DetailsScreen(f"Checkpoint {info.name}", body))

    def action_rename(self) -> None:
        info = self._selected_info()
        if info is None:
            return
        from engine.store.checkpoints import validate_name
        from engine.errors import EngineError

        def check(value: str) -> str | None:
            try:
                validate_name(value)
            except EngineError as exc:
                return str(exc)
            if value != info.name and any(i.name == value for i in self.infos):
                return f"a checkpoint named '{value}' already exists"
            return None

        def done(new: str | None) -> None:
            if not new or new == info.name:
                return
            self.app.rename_checkpoint(info.name, new)

        self.app.push_screen(PromptScreen(f"Rename '{info.name}' to", info.name, check), done)

    def action_delete(self) -> None:
        info = self._selected_info()
        if info is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.app.delete_checkpoint(info.name)

        self.app.push_screen(
            ConfirmScreen(f"Delete checkpoint '{info.name}' ({fmt_size(info.size_bytes)})? This cannot be undone.", yes="Delete"),
            done,
        )

    def _selected_usable(self):
        """The selected checkpoint, or None (with a notice) when nothing or a broken one is selected."""
        info = self._selected_info()
        if info is not None and not info.ok:
            self.app.notify(one_line(f"'{info.name}' is broken: {info.broken}", 200), severity="error")
            return None
        return info

    def action_compare(self) -> None:
        """The highlighted checkpoint against the active one, side by side."""
        info = self._selected_usable()
        if info is None:
            return
        app = self.app
        active = app.active_name if app.active_kind == "checkpoint" else None
        if active is None or active == info.name:
            app.notify(with_keys(app, "Compare needs two: make one checkpoint active (<ckpt.use>), then press <ckpt.compare> on another"), severity="warning")
            return
        from tui.screens.compare import CompareScreen

        ready = {active: app.chat_model} if app.chat_model is not None else {}
        app.push_screen(CompareScreen((active, info.name), ready))

    def action_resume(self) -> None:
        info = self._selected_usable()
        if info is None:
            return
        if not info.resumable:
            self.app.notify(f"'{info.name}' has no training state to resume from", severity="warning")
            return
        steps = info.record.steps
        planned = info.record.planned_steps or 0
        default = planned if planned > steps else max(steps * 2, steps + 100)

        def check(value: str) -> str | None:
            if not value.isdigit() or int(value) <= steps:
                return f"give a whole number of steps above {steps} (where '{info.name}' is now)"
            return None

        def done(value: str | None) -> None:
            if not value:
                return
            from engine.training.config import TrainConfig

            if self.app.start_training(TrainConfig(resume=info.name, max_steps=int(value))):
                self.app.switch_mode("training")

        self.app.push_screen(PromptScreen(f"Train '{info.name}' on to step", str(default), check), done)
