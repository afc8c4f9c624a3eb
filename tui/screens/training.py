"""The training screen: a form to start a run, and the live view of the run the app started."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Input, Label, Log, ProgressBar, RichLog, Select, Sparkline, Static

from engine.errors import EngineError, UsageError
from engine.model import PRESETS

from tui.widgets.footer import AppFooter
from tui.keymap import key_for, with_keys
from tui.widgets.loss_chart import LossChart
from tui.state.run_state import fmt_s
from tui.safe import literal, one_line, visible

# What the model learns, and the data each stage trains on when the Dataset field is empty
# (build_config): chat is the first run's (engine.training.config.first_run_config), base the plain-text default.
STAGES = [
    # value, label, default dataset (None: the engine's default text, WikiText-2 or offline the built-in corpus)
    ("chat", "chat (conversations)", "chitchat"),
    ("base", "base (text)", None),
]
DEFAULT_STAGE = "chat"
# The Dataset field's word for the saved chats (F5): the form exports them (their shown paths, as
# JSONL in the messages format) beside the conversation database and trains on that file.
SAVED_CHATS = "saved-chats"
STAGE_HINTS = {  # under the form: what the Dataset field takes at each stage
    "chat": f'Conversations: chitchat, {SAVED_CHATS} (your saved chats, <app.conversations>), or a .jsonl of {{"messages": [...]}} rows',
    "base": "Text: wikitext, builtin (the Bible), a hub id, a .txt file",
}


def dataset_placeholder(stage: str) -> str:
    """What an empty Dataset field trains on at ``stage``."""
    default = dict((value, dataset) for value, _label, dataset in STAGES).get(stage)
    return f"{default or 'wikitext'} (default)"


FORM = [
    # id, label, placeholder
    ("name", "Name", "automatic"),
    ("dataset", "Dataset", ""),  # (its placeholder follows the stage: dataset_placeholder)
    ("tokenizer", "Tokenizer", "default|gpt2|bpe:N|path"),
    ("init", "Start from", "new model, or checkpoint|folder|hub id"),
    ("time", "Time budget", "e.g. 3m (optional)"),
    ("steps", "Steps", "automatic"),
    ("epochs", "Epochs", "1 (if no steps)"),
    ("lr", "LR", "preset default"),
]
# The TrainConfig field behind each form input, where its id is not the field's name: a
# UsageError's ``field`` marks the input it is about.
FORM_FIELDS = {"time": "time_budget", "steps": "max_steps"}


def form_input_for(field: str | None) -> str | None:
    """The form input's id for a TrainConfig field (None: no input holds it)."""
    ids = {FORM_FIELDS.get(key, key): key for key, *_ in FORM}
    return ids.get(field)


def uses_saved_chats(dataset: str | None) -> bool:
    """The Dataset field names the saved chats (and no file of that name is here)."""
    import os

    return (dataset or "").strip() == SAVED_CHATS and not os.path.exists(SAVED_CHATS)


def export_saved_chats(conversations, chat_key: str = "F1") -> tuple[str, str]:
    """Every saved chat as JSONL training data, rewritten at each run's start: (its path, a note
    for the run's log).  UsageError about the Dataset field when no saved chat has a reply."""
    from tui.store.chat_jsonl import ChatFileError, export_jsonl, training_export_path

    try:
        done = export_jsonl(conversations, None, training_export_path(conversations), overwrite=True)
    except ChatFileError as exc:
        raise UsageError(f"{SAVED_CHATS}: {exc} (chat first, {chat_key})", field="dataset") from None
    except OSError as exc:
        raise UsageError(f"{SAVED_CHATS}: cannot write {training_export_path(conversations)}: {exc.strerror or exc}", field="dataset") from None
    return str(done.path), f"{SAVED_CHATS}: {done.summary()}"


def build_config(values: dict[str, str], store=None, checkpoints_key: str = "F3"):
    """A checked TrainConfig from the form's strings; raises UsageError (message names the field).
    ``checkpoints_key``: the key of the checkpoints screen, as an error names it."""
    from engine.training.config import TrainConfig

    def number(key: str, label: str, kind):
        text = values.get(key, "").strip()
        field = FORM_FIELDS.get(key, key)
        if not text:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise UsageError(f"{label}: expected {'a whole number' if kind is int else 'a number'}, got {text!r}", field=field) from None
        if not value > 0 or value != value or value == float("inf"):
            raise UsageError(f"{label} must be > 0 (got {text})", field=field)
        return value

    name = values.get("name", "").strip() or None
    stage = values.get("stage") or DEFAULT_STAGE
    defaults = {value: dataset for value, _label, dataset in STAGES}
    if stage not in defaults:
        raise UsageError(f"stage: expected {' or '.join(defaults)}, got {stage!r}", field="stage")
    dataset = values.get("dataset", "").strip() or defaults[stage]  # what the user typed wins
    time_text = values.get("time", "").strip()
    if time_text:
        from engine.training.schedule import parse_duration

        try:
            time_budget = parse_duration(time_text, "time budget")
        except UsageError as exc:
            raise UsageError(str(exc), field="time_budget") from None
    else:
        time_budget = None
    init = values.get("init", "").strip() or None
    if init and store is not None and "/" not in init and store.path(init).is_dir():
        init = str(store.path(init))  # a saved checkpoint, by name: fine-tune it
    config = TrainConfig(
        dataset=dataset,
        init=init,
        tokenizer=values.get("tokenizer", "").strip() or None,
        preset=values.get("preset") or "seed",
        max_steps=number("steps", "steps", int),
        epochs=number("epochs", "epochs", float),
        lr=number("lr", "learning rate", float),
        name=name,
        time_budget=time_budget,
    )
    config.check()
    if name and store is not None and store.exists(name):
        raise UsageError(f"a checkpoint named '{name}' exists: choose another name (or resume it from {checkpoints_key})", field="name")
    return config


class TrainingScreen(Screen):
    AUTO_FOCUS = "#f-name"
    BINDINGS = [
        Binding("ctrl+r", "start", "Start run", id="train.start"),
        Binding("ctrl+b", "pause_resume", "Pause/Resume", id="train.pause"),
        Binding("ctrl+s", "stop", "Stop (save)", id="train.stop"),
        Binding("ctrl+l", "log_scale", "Log scale", id="train.log_scale"),
    ]

    def __init__(self):
        super().__init__(id="training-screen")

    def compose(self) -> ComposeResult:
        yield Static("", id="train-status")
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form", can_focus=False):
                yield Label("New run", classes="section-title")
                with Grid(id="train-grid"):
                    for key, label, placeholder in FORM:
                        if key == "dataset":  # the stage decides what an empty Dataset means
                            yield Label("Stage", classes="field-label")
                            yield Select([(text, value) for value, text, _ in STAGES], value=DEFAULT_STAGE, allow_blank=False, id="f-stage", compact=True)
                            placeholder = dataset_placeholder(DEFAULT_STAGE)
                        elif key == "init":
                            yield Label("Preset", classes="field-label")
                            yield Select(
                                [(f"{p.name} ({p.n_layer}x{p.n_embd})", p.name) for p in PRESETS.values()],
                                value="seed",
                                allow_blank=False,
                                id="f-preset",
                                compact=True,
                            )
                        yield Label(label, classes="field-label")
                        yield Input(placeholder=placeholder, id=f"f-{key}", compact=True)
                yield Static("", id="form-error", classes="form-error")
                yield Button(with_keys(self.app, "Start run (<train.start>)"), id="start", variant="primary")
                yield Static("", id="preset-help", classes="hint")
                yield Static("", id="dataset-help", classes="hint")
            with Vertical(id="train-live"):
                yield Static(with_keys(self.app, "No run yet. Fill in the form and press <train.start>."), id="run-title")
                yield ProgressBar(total=100, show_eta=True, id="run-progress")
                yield Static("", id="run-stats")
                yield LossChart(id="loss-chart")
                with Horizontal(id="lr-row"):
                    yield Label("learning rate ", classes="spark-label")
                    yield Sparkline([], id="lr-spark")
                    yield Label("  grad norm ", classes="spark-label")
                    yield Sparkline([], id="grad-spark")
                yield Static("", id="run-eval")
                yield RichLog(id="sample-history", wrap=True, markup=False, max_lines=500, min_width=20)
                yield Static("", id="run-error", classes="form-error")
                with Horizontal(id="run-buttons"):
                    yield Button("Pause", id="pause", compact=True)
                    yield Button("Resume", id="resume", compact=True)
                    yield Button("Stop (save)", id="stop", variant="error", compact=True)
                yield Log(id="run-log", max_lines=500)
        yield AppFooter()

    def on_mount(self) -> None:
        self.app.views["training"] = self
        self._preset_help("seed")
        self._stage_help(DEFAULT_STAGE)
        self.sync()
        # the app's run changes; this screen redraws what changed (it is never called into)
        self.watch(self.app, "run_revision", self.show_run, init=False)
        self.watch(self.app, "run_progress", self.update_progress, init=False)

    def on_screen_resume(self) -> None:
        self.sync()

    # --- form ---
    def _preset_help(self, name) -> None:
        p = PRESETS.get(name)
        if p:
            self.query_one("#preset-help", Static).update(
                literal(f"{p.name}: {p.description}; batch {p.batch_size}, block {p.block_size}, lr {p.lr:g}")
            )

    def _stage_help(self, stage) -> None:
        """The dataset field says what an empty field trains on at this stage."""
        self.query_one("#f-dataset", Input).placeholder = dataset_placeholder(stage)
        self.query_one("#dataset-help", Static).update(literal(with_keys(self.app, STAGE_HINTS.get(stage, ""))))

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "f-stage":
            self._stage_help(event.value)
        else:
            self._preset_help(event.value)

    def form_values(self) -> dict[str, str]:
        values = {key: self.query_one(f"#f-{key}", Input).value for key, *_ in FORM}
        values["preset"] = self.query_one("#f-preset", Select).value
        values["stage"] = self.query_one("#f-stage", Select).value
        return values

    def action_start(self) -> None:
        app = self.app
        for inp in self.query("#train-grid Input"):
            inp.remove_class("-invalid")
        error = self.query_one("#form-error", Static)
        if app.run_state.running:
            error.update(with_keys(app, "A run is already going: stop it first (<train.stop>)."))
            return
        from engine.store.checkpoints import CheckpointStore

        note = None
        try:
            config = build_config(self.form_values(), CheckpointStore(), checkpoints_key=key_for(app, "app.checkpoints"))
            if uses_saved_chats(config.dataset):  # (checked first: a bad form exports nothing)
                config.dataset, note = export_saved_chats(app.conversations, key_for(app, "app.chat"))
        except EngineError as exc:
            error.update(literal(str(exc)))
            key = form_input_for(exc.field)
            if key is not None:
                self.query_one(f"#f-{key}", Input).add_class("-invalid")
            return
        error.update("")
        if app.start_training(config) and note:
            app.run_state.log.append(note)
            app.run_revision += 1

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

    def action_log_scale(self) -> None:
        chart = self.query_one(LossChart)
        chart.log_scale = not chart.log_scale

    # --- live view ---
    _shown: tuple = (None, 0, 0, None)  # (run state, log lines, samples, evaluation) on screen

    def show_run(self) -> None:
        """Bring the screen up to date with the run: a new run redraws everything, the same run
        adds its new log lines and samples."""
        state = self.app.run_state
        shown_state, lines, samples, shown_eval = self._shown
        if state is not shown_state:
            self.sync()
            return
        log = self.query_one("#run-log", Log)
        for line in state.log[lines:]:
            log.write_line(visible(line))
        if len(state.samples) > samples:
            history = self.query_one("#sample-history", RichLog)
            if samples == 0:
                history.clear()
            for sample in state.samples[samples:]:
                history.write(_sample_text(sample))
        self.update_progress()
        if state.eval is not shown_eval:
            self.update_eval()
        self.update_controls()
        self._shown = (state, len(state.log), len(state.samples), state.eval)

    def sync(self) -> None:
        """Redraw everything from the app's run state."""
        state = self.app.run_state
        self.update_progress()
        self.update_eval()
        history = self.query_one("#sample-history", RichLog)
        history.clear()
        for sample in state.samples:
            history.write(_sample_text(sample))
        if not state.samples:
            history.write(Text("no sample yet: the model's words appear here at every evaluation", style="dim"))
        log = self.query_one("#run-log", Log)
        log.clear()
        log.write_lines([visible(line) for line in state.log])
        self.update_controls()
        self._shown = (state, len(state.log), len(state.samples), state.eval)

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
            title.append(with_keys(self.app, "No run yet. Fill in the form and press <train.start>."))
        self.query_one("#run-title", Static).update(title)
        line = Text()
        label = {
            "idle": ("idle", "dim"),
            "starting": ("starting", "yellow"),
            "running": ("running", "green"),
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
        stats = self.query_one("#run-stats", Static)
        self._update_chart()
        if step is None:
            total = (state.started.total_steps or None) if state.started is not None else 100  # None: a timed run
            bar.update(total=total, progress=state.started.start_step if state.started is not None else 0)
            stats.update("")
            self.query_one("#lr-spark", Sparkline).data = []
            self.query_one("#grad-spark", Sparkline).data = []
            return
        bar.update(total=step.total_steps, progress=step.step)
        self.query_one("#lr-spark", Sparkline).data = [lr for *_, lr in state.history()[-2000:]]
        self.query_one("#grad-spark", Sparkline).data = state.grad_norm_history()[-2000:]
        grad = step.grad_norm
        if state.running:  # the time left; once the run has ended, how long it trained
            timing = (("  left " if step.time_budget_s else "  eta ", "dim"), fmt_s(step.eta_s))
        else:
            timing = (("  ran ", "dim"), fmt_s(step.elapsed_s))
        stats.update(
            Text.assemble(
                ("step ", "dim"), f"{step.step}/{step.total_steps}",
                ("  loss ", "dim"), f"{step.loss:.4f}",
                ("  lr ", "dim"), f"{step.lr:.2e}",
                ("  grad norm ", "dim") if grad is not None else "", f"{grad:.3f}" if grad is not None else "",
                *timing, "\n",
                (f"{step.tokens_per_s:,.0f}", ""), (" tok/s", "dim"),
                ("  tokens seen ", "dim"), f"{step.tokens_seen:,}",
                ("  epoch ", "dim"), f"{step.epoch:.2f}",
            )
        )

    def _update_chart(self) -> None:
        state = self.app.run_state
        self.query_one(LossChart).set_data([(tokens, loss) for _step, tokens, loss, _lr in state.history()], list(state.val_points))

    def update_eval(self) -> None:
        ev = self.app.run_state.eval
        self._update_chart()
        self.query_one("#run-eval", Static).update(
            Text.assemble(
                ("eval @ ", "dim"), str(ev.step),
                ("  val loss ", "dim"), f"{ev.val_loss:.4f}",
                ("  perplexity ", "dim"), f"{ev.perplexity:.1f}",
                ("  bits/byte ", "dim"), f"{ev.bits_per_byte:.4f}",
                *((("  word ppl ", "dim"), f"{ev.word_perplexity:.1f}") if ev.word_perplexity is not None else ()),
                *chat_scores(ev),
            )
            if ev is not None
            else Text("no evaluation yet", style="dim")
        )


def chat_scores(ev) -> tuple:
    """A chat run's evaluation scores, as Text.assemble parts: "end-of-turn 94%  ranking 41%"."""
    parts: tuple = ()
    for label, value in (("end-of-turn", getattr(ev, "eot_rate", None)), ("ranking", getattr(ev, "ranking_top1", None))):
        if value is not None:
            parts += ((f"  {label} ", "dim"), f"{value * 100:.0f}%")
    return parts


def _sample_text(sample) -> Text:
    text = Text()
    text.append(f"step {sample.step}: ", style="bold")
    prompt, reply = " ".join(sample.prompt.split())[-60:], " ".join(sample.text.split())
    joined = sample.prompt[-1:].isspace() or sample.text[:1].isspace()  # keep the word break
    text.append(visible(prompt), style="dim italic")
    text.append(visible((" " if joined and prompt and reply else "") + reply))
    return text
