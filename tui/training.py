"""The training screen: a form to start a run, and the live view of the run the app started."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Log, ProgressBar, Select, Sparkline, Static

from engine.errors import EngineError, UsageError
from engine.model import PRESETS

from .safe import literal, one_line, visible

FORM = [
    # id, label, placeholder
    ("name", "Name", "automatic"),
    ("dataset", "Dataset", "wikitext|builtin|path"),
    ("tokenizer", "Tokenizer", "gpt2|bpe:N|path"),
    ("time", "Time budget", "e.g. 3m (optional)"),
    ("steps", "Steps", "automatic"),
    ("epochs", "Epochs", "1 (if no steps)"),
    ("lr", "LR", "preset default"),
]


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def build_config(values: dict[str, str], store=None):
    """A checked TrainConfig from the form's strings; raises UsageError (message names the field)."""
    from engine.train import TrainConfig

    def number(key: str, label: str, kind):
        text = values.get(key, "").strip()
        if not text:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise UsageError(f"{label}: expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise UsageError(f"{label} must be > 0 (got {text})")
        return value

    name = values.get("name", "").strip() or None
    time_text = values.get("time", "").strip()
    if time_text:
        from engine.schedule import parse_duration

        time_budget = parse_duration(time_text, "time budget")
    else:
        time_budget = None
    config = TrainConfig(
        dataset=values.get("dataset", "").strip() or None,
        tokenizer=values.get("tokenizer", "").strip() or "gpt2",
        preset=values.get("preset") or "seed",
        max_steps=number("steps", "steps", int),
        epochs=number("epochs", "epochs", float),
        lr=number("lr", "learning rate", float),
        name=name,
        time_budget=time_budget,
    )
    config.check()
    if name and store is not None and store.exists(name):
        raise UsageError(f"a checkpoint named '{name}' exists: choose another name (or resume it from F3)")
    return config


_FIELD_HINTS = {
    "name": ("name", "checkpoint name", "a checkpoint named"),
    "dataset": ("dataset",),
    "tokenizer": ("tokenizer", "bpe"),
    "time": ("time budget", "--time"),
    "steps": ("steps", "--max-steps"),
    "epochs": ("epochs", "--epochs"),
    "lr": ("learning rate", "--lr"),
}


class TrainingScreen(Screen):
    AUTO_FOCUS = "#f-name"
    BINDINGS = [
        Binding("ctrl+r", "start", "Start run", id="train.start"),
        Binding("ctrl+b", "pause_resume", "Pause/Resume", id="train.pause"),
        Binding("ctrl+s", "stop", "Stop (save)", id="train.stop"),
    ]

    def __init__(self):
        super().__init__(id="training-screen")

    def compose(self) -> ComposeResult:
        yield Static("", id="train-status")
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form", can_focus=False):
                yield Label("New run", classes="section-title")
                with Grid(id="train-grid"):
                    for key, label, placeholder in FORM[:3]:
                        yield Label(label, classes="field-label")
                        yield Input(placeholder=placeholder, id=f"f-{key}", compact=True)
                    yield Label("Preset", classes="field-label")
                    yield Select(
                        [(f"{p.name} ({p.n_layer}x{p.n_embd})", p.name) for p in PRESETS.values()],
                        value="seed",
                        allow_blank=False,
                        id="f-preset",
                        compact=True,
                    )
                    for key, label, placeholder in FORM[3:]:
                        yield Label(label, classes="field-label")
                        yield Input(placeholder=placeholder, id=f"f-{key}", compact=True)
                yield Static("", id="form-error", classes="form-error")
                yield Button("Start run (Ctrl+R)", id="start", variant="primary")
                yield Static("", id="preset-help", classes="hint")
            with Vertical(id="train-live"):
                yield Static("No run yet. Fill in the form and press Ctrl+R.", id="run-title")
                yield ProgressBar(total=100, show_eta=True, id="run-progress")
                yield Static("", id="run-stats")
                yield Label("loss", classes="spark-label")
                yield Sparkline([], id="loss-spark")
                yield Label("validation loss", classes="spark-label")
                yield Sparkline([], id="val-spark")
                yield Static("", id="run-eval")
                yield Static("", id="run-sample")
                yield Static("", id="run-error", classes="form-error")
                with Horizontal(id="run-buttons"):
                    yield Button("Pause", id="pause", compact=True)
                    yield Button("Resume", id="resume", compact=True)
                    yield Button("Stop (save)", id="stop", variant="error", compact=True)
                yield Log(id="run-log", max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        self.app.views["training"] = self
        self._preset_help("seed")
        self.sync()

    def on_screen_resume(self) -> None:
        self.sync()

    # --- form ---
    def _preset_help(self, name) -> None:
        p = PRESETS.get(name)
        if p:
            self.query_one("#preset-help", Static).update(
                literal(f"{p.name}: {p.description}; batch {p.batch_size}, block {p.block_size}, lr {p.lr:g}")
            )

    def on_select_changed(self, event: Select.Changed) -> None:
        self._preset_help(event.value)

    def form_values(self) -> dict[str, str]:
        values = {key: self.query_one(f"#f-{key}", Input).value for key, *_ in FORM}
        values["preset"] = self.query_one("#f-preset", Select).value
        return values

    def action_start(self) -> None:
        app = self.app
        for inp in self.query("#train-grid Input"):
            inp.remove_class("-invalid")
        error = self.query_one("#form-error", Static)
        if app.run_state.running:
            error.update("A run is already going: stop it first (Ctrl+S).")
            return
        from engine.checkpoints import CheckpointStore

        try:
            config = build_config(self.form_values(), CheckpointStore())
        except EngineError as exc:
            message = str(exc)
            error.update(literal(message))
            low = message.lower()
            for key, hints in _FIELD_HINTS.items():
                if any(h in low for h in hints):
                    self.query_one(f"#f-{key}", Input).add_class("-invalid")
                    break
            return
        error.update("")
        app.start_training(config)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action = {"start": self.action_start, "pause": self.app.pause_training, "resume": self.app.resume_training, "stop": self.action_stop}
        action[event.button.id]()

    def action_pause_resume(self) -> None:
        if self.app.run_state.status == "paused":
            self.app.resume_training()
        else:
            self.app.pause_training()

    def action_stop(self) -> None:
        self.app.stop_training()

    # --- live view ---
    def sync(self) -> None:
        """Redraw everything from the app's run state."""
        state = self.app.run_state
        self.update_progress()
        self.query_one("#val-spark", Sparkline).data = list(state.val_losses)
        self.update_eval()
        self.update_sample()
        log = self.query_one("#run-log", Log)
        log.clear()
        log.write_lines(state.log)
        self.update_controls()

    def update_controls(self) -> None:
        state = self.app.run_state
        status = state.status
        self.query_one("#start", Button).disabled = state.running
        self.query_one("#pause", Button).disabled = status not in ("running",)
        self.query_one("#resume", Button).disabled = status not in ("paused", "pausing")
        self.query_one("#stop", Button).disabled = status not in ("starting", "running", "pausing", "paused")
        err = self.query_one("#run-error", Static)
        err.update(literal(f"Run failed: {state.error}") if status == "failed" and state.error else "")
        title = Text()
        if state.started is not None:
            s = state.started
            title.append(one_line(s.name, 40), style="bold")
            title.append_text(
                literal(f"  {s.preset} \u00b7 {s.params / 1e6:.2f}M params \u00b7 {one_line(s.dataset, 30)} \u00b7 {s.device}/{s.dtype}")
            )
        elif status == "starting":
            title.append("Preparing the run (tokenizer, data, model)\u2026")
        else:
            title.append("No run yet. Fill in the form and press Ctrl+R.")
        self.query_one("#run-title", Static).update(title)
        line = Text()
        label = {
            "idle": ("idle", "dim"),
            "starting": ("starting", "yellow"),
            "running": ("training", "green"),
            "pausing": ("pausing at the end of this step\u2026", "yellow"),
            "paused": ("paused", "yellow"),
            "stopping": ("stopping: saving a checkpoint\u2026", "yellow"),
            "finished": ("finished", "green"),
            "stopped": ("stopped", "yellow"),
            "failed": ("failed", "red"),
        }[status]
        line.append("Training: ", style="bold")
        line.append(label[0], style=label[1])
        if state.name:
            line.append_text(literal(f"  \u2502  {state.name}"))
        self.query_one("#train-status", Static).update(line)

    def update_progress(self) -> None:
        state = self.app.run_state
        step = state.step
        bar = self.query_one("#run-progress", ProgressBar)
        spark = self.query_one("#loss-spark", Sparkline)
        stats = self.query_one("#run-stats", Static)
        if step is None:
            total = (state.started.total_steps or None) if state.started is not None else 100  # None: a timed run
            bar.update(total=total, progress=state.started.start_step if state.started is not None else 0)
            stats.update("")
            spark.data = []
            return
        bar.update(total=step.total_steps, progress=step.step)
        spark.data = state.loss_history()[-2000:]
        stats.update(
            Text.assemble(
                ("step ", "dim"), f"{step.step}/{step.total_steps}",
                ("  loss ", "dim"), f"{step.loss:.4f}",
                ("  lr ", "dim"), f"{step.lr:.2e}",
                ("  left " if step.time_budget_s else "  eta ", "dim"), fmt_s(step.eta_s), "\n",
                (f"{step.tokens_per_s:,.0f}", ""), (" tok/s", "dim"),
                ("  tokens seen ", "dim"), f"{step.tokens_seen:,}",
                ("  epoch ", "dim"), f"{step.epoch:.2f}",
            )
        )

    def update_eval(self) -> None:
        ev = self.app.run_state.eval
        self.query_one("#val-spark", Sparkline).data = list(self.app.run_state.val_losses)
        self.query_one("#run-eval", Static).update(
            Text.assemble(
                ("eval @ ", "dim"), str(ev.step),
                ("  val loss ", "dim"), f"{ev.val_loss:.4f}",
                ("  perplexity ", "dim"), f"{ev.perplexity:.1f}",
                ("  bits/byte ", "dim"), f"{ev.bits_per_byte:.4f}",
                *((("  word ppl ", "dim"), f"{ev.word_perplexity:.1f}") if ev.word_perplexity is not None else ()),
            )
            if ev is not None
            else Text("no evaluation yet", style="dim")
        )

    def update_sample(self) -> None:
        sample = self.app.run_state.sample
        widget = self.query_one("#run-sample", Static)
        if sample is None:
            widget.update(Text("no sample yet", style="dim"))
            return
        text = Text()
        text.append(f"sample @ {sample.step}: ", style="dim")
        text.append(visible(" ".join(sample.prompt.split())[-60:]), style="dim italic")
        text.append(visible(" ".join(sample.text.split())))
        widget.update(text)

    def add_log(self, line: str) -> None:
        self.query_one("#run-log", Log).write_line(visible(line))
