"""Sampling settings (a modal) of the open chat: temperature, top-k, top-p, max new tokens,
repetition penalty, seed; "Make default" also makes them the defaults for new chats."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from engine.errors import UsageError
from engine.store.settings import Sampling

from tui.safe import literal

FIELDS = [
    ("temperature", "Temperature", "0 = greedy", float),
    ("top_k", "Top-k", "0 = off", int),
    ("top_p", "Top-p", "1 = off", float),
    ("max_new_tokens", "Max new tokens", ">= 1", int),
    ("repetition_penalty", "Repetition penalty", "1 = off", float),
    ("seed", "Seed", "empty = random", int),
]


def parse_sampling(values: dict[str, str]) -> Sampling:
    """Sampling from form strings; raises UsageError whose ``field`` is the bad one."""
    parsed = {}
    for key, label, _hint, kind in FIELDS:
        text = values.get(key, "").strip()
        if key == "seed" and text == "":
            parsed[key] = None
            continue
        try:
            parsed[key] = kind(text)
        except ValueError:
            raise UsageError(f"{label.lower()}: expected {'a whole number' if kind is int else 'a number'}, got {text!r}", field=key) from None
        if kind is float and parsed[key] != parsed[key]:
            raise UsageError(f"{label.lower()} is not a number", field=key)
    return Sampling(**parsed).validated()


class SamplingScreen(ModalScreen[tuple[Sampling, bool] | None]):
    """Edit the open chat's sampling values; dismisses with (the new Sampling, whether it is
    also the default for new chats) or None.  The app stores them."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="sampling.cancel")]

    def __init__(self, sampling: Sampling, defaults: Sampling | None = None):
        super().__init__(classes="dialog-screen")
        self.sampling = sampling
        self.defaults = defaults or sampling

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="sampling-dialog"):
            yield Label("Sampling for this chat", classes="dialog-title")
            own = "this chat has its own values" if self.sampling != self.defaults else "this chat uses the defaults"
            yield Static(f"{own} \u00b7 Save: this chat only \u00b7 Make default: new chats too", id="sampling-scope", classes="hint")
            with Grid(id="sampling-grid"):
                for key, label, hint, _kind in FIELDS:
                    value = getattr(self.sampling, key)
                    yield Label(label, classes="field-label")
                    yield Input("" if value is None else str(value), placeholder=hint, id=f"s-{key}", compact=True)
            yield Static("", id="sampling-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Make default", id="make-default")
                yield Button("Defaults", id="defaults")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#s-temperature", Input).focus()

    def _values(self) -> dict[str, str]:
        return {key: self.query_one(f"#s-{key}", Input).value for key, *_ in FIELDS}

    def _save(self, make_default: bool = False) -> None:
        for inp in self.query(Input):
            inp.remove_class("-invalid")
        try:
            sampling = parse_sampling(self._values())
        except UsageError as exc:
            self.query_one("#sampling-error", Static).update(literal(str(exc)))
            if exc.field in {key for key, *_ in FIELDS}:
                self.query_one(f"#s-{exc.field}", Input).add_class("-invalid")
            return
        self.dismiss((sampling, make_default))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id in ("save", "make-default"):
            self._save(make_default=event.button.id == "make-default")
        elif event.button.id == "defaults":  # the defaults for new chats
            for key, *_ in FIELDS:
                value = getattr(self.defaults, key)
                self.query_one(f"#s-{key}", Input).value = "" if value is None else str(value)
        else:
            self.dismiss(None)
