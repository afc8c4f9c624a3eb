"""The token inspector: each token of a reply coloured by the probability the model gave it;
select a token (Left/Right, Home/End, or a click) to see the model's top-10 alternatives there.

The numbers come from the reply's own decode (``Sampling``-independent: the model's softmax at
temperature 1 over the whole vocabulary), recorded while it streamed: nothing is recomputed.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from tui.safe import visible
from tui.keymap import with_keys

# probability -> colour, from unlikely (red) to certain (green)
_BANDS = ((0.05, "#d7263d"), (0.2, "#f46036"), (0.5, "#e2c044"), (0.8, "#8fbf5a"), (1.01, "#2ab27b"))


def prob_colour(p: float) -> str:
    return next(colour for limit, colour in _BANDS if p < limit)


class InspectorScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Close", id="inspect.close"),
        Binding("left", "move(-1)", "Previous token", id="inspect.prev"),
        Binding("right", "move(1)", "Next token", id="inspect.next"),
        Binding("home", "jump(0)", "First", id="inspect.first", show=False),
        Binding("end", "jump(-1)", "Last", id="inspect.last", show=False),
    ]

    def __init__(self, choices: list, decode, title: str = "Token inspector"):
        """``choices``: TokenChoice per generated token; ``decode``: token id -> text."""
        super().__init__(classes="dialog-screen")
        self.choices, self.decode, self.title_text = choices, decode, title
        self.selected = 0
        self._texts: dict[int, str] = {}

    def text_of(self, token_id: int) -> str:
        if token_id not in self._texts:
            self._texts[token_id] = self.decode(token_id)
        return self._texts[token_id]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="inspector"):
            yield Label(Text(self.title_text + with_keys(self.app, "  (<inspect.prev>/<inspect.next> or click a token \u00b7 <inspect.close> close)")), classes="dialog-title")
            with VerticalScroll(id="inspector-tokens"):
                yield Static("", id="inspector-text")
            yield Static("", id="inspector-selected")
            yield DataTable(id="inspector-alternatives", cursor_type="row", zebra_stripes=True, show_cursor=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("rank", key="rank")
        table.add_column("token", key="token")
        table.add_column("probability", key="prob")
        table.add_column("", key="bar")
        self._show()

    def action_move(self, delta: int) -> None:
        if self.choices:
            self.selected = max(0, min(len(self.choices) - 1, self.selected + delta))
            self._show()

    def action_jump(self, index: int) -> None:
        if self.choices:
            self.selected = index % len(self.choices)
            self._show()

    def action_select(self, index: int) -> None:
        """A click on a token (the text's ``@click`` meta calls this)."""
        self.action_jump(index)

    def rendered(self) -> Text:
        out = Text()
        for i, choice in enumerate(self.choices):
            colour = prob_colour(choice.prob)
            piece = visible(self.text_of(choice.token_id)) or "\u2400"
            style = Style(color="black", bgcolor=colour, bold=True) if i == self.selected else Style(color=colour)
            out.append(piece, style=style + Style(meta={"@click": f"screen.select({i})"}))
        return out

    def _show(self) -> None:
        self.query_one("#inspector-text", Static).update(self.rendered() if self.choices else Text("(no tokens)", style="dim"))
        table = self.query_one(DataTable)
        table.clear()
        if not self.choices:
            return
        choice = self.choices[self.selected]
        head = Text()
        head.append(f"token {self.selected + 1}/{len(self.choices)}: ", style="bold")
        head.append(repr(self.text_of(choice.token_id)))
        head.append(f"  p = {choice.prob:.4f}", style=prob_colour(choice.prob))
        rank = next((r for r, (tid, _) in enumerate(choice.alternatives, 1) if tid == choice.token_id), None)
        head.append(f"  (rank {rank} of the model's choices)" if rank else "  (outside the model's top 10)", style="dim")
        self.query_one("#inspector-selected", Static).update(head)
        for r, (token_id, p) in enumerate(choice.alternatives, 1):
            mark = "\u25b6 " if token_id == choice.token_id else "  "
            table.add_row(
                Text(f"{mark}{r}"),
                Text(repr(self.text_of(token_id)), style="bold" if token_id == choice.token_id else ""),
                Text(f"{p:.4f}", style=prob_colour(p)),
                Text("\u2588" * max(1, round(p * 30)), style=prob_colour(p)),
            )
