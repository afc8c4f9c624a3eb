"""Compare: the same prompt to two checkpoints side by side, both streaming, each with its speed.

Opened from the checkpoint picker (c: the highlighted checkpoint against the active one).  Each
side loads its model and streams on its own worker thread; workers only post messages.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from tui.widgets.turns import ChatInput, TurnView
from tui.widgets.footer import AppFooter, key_name
from tui.safe import one_line


@dataclass
class CompareLoaded(Message):
    side: int
    model: object | None
    error: str | None = None


@dataclass
class CompareProgress(Message):
    side: int
    prompt_id: int
    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CompareProgress) and (message.side, message.prompt_id) == (self.side, self.prompt_id)


@dataclass
class CompareDone(Message):
    side: int
    prompt_id: int
    event: object  # GenerationFinished | GenerationFailed


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "close", "Close", id="compare.close"),
        Binding("ctrl+x", "stop", "Stop replies", id="compare.stop"),
    ]

    def __init__(self, names: tuple[str, str], ready: dict[str, object] | None = None):
        """``ready``: models already loaded (the chat's), by checkpoint name."""
        super().__init__(id="compare-screen")
        self.names = names
        self.models: list[object | None] = [None, None]
        self.ready = dict(ready or {})
        self.replies: list[TurnView | None] = [None, None]
        self.prompt_id = 0
        self.stop_event = threading.Event()
        self.done = [True, True]

    def compose(self) -> ComposeResult:
        yield Static(Text("Compare: the same prompt to both \u00b7 Esc back", style="bold"), id="compare-status")
        with Horizontal(id="compare-body"):
            for side, name in enumerate(self.names):
                with Vertical(classes="compare-side"):
                    yield Static(Text(f"{one_line(name, 40)} \u00b7 loading\u2026", style="bold"), id=f"compare-head-{side}", classes="compare-head")
                    yield VerticalScroll(id=f"compare-view-{side}", classes="compare-view")
        yield ChatInput(id="compare-input")
        yield AppFooter()

    def on_mount(self) -> None:
        for side, name in enumerate(self.names):
            if name in self.ready:
                self.post_message(CompareLoaded(side, self.ready[name]))
            else:
                self.run_worker(lambda side=side, name=name: self._load(side, name), thread=True, group=f"compare-load-{side}", exit_on_error=False)
        self.query_one(ChatInput).focus()

    def _load(self, side: int, name: str) -> None:
        try:
            from engine.generation.chat_model import ChatModel

            model = ChatModel.from_checkpoint(name)
        except Exception as exc:  # one line for the user, whatever broke
            self.post_message(CompareLoaded(side, None, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            return
        self.post_message(CompareLoaded(side, model))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.models[message.side] = message.model
        name = one_line(self.names[message.side], 40)
        head = Text(name, style="bold")
        if message.error:
            head.append(f" \u00b7 cannot load: {one_line(message.error, 80)}", style="red")
        else:
            head.append(" \u00b7 ready", style="green")
        self.query_one(f"#compare-head-{message.side}", Static).update(head)

    @property
    def streaming(self) -> bool:
        return not all(self.done)

    def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        text = event.text
        if not text.strip():
            return
        if self.streaming:
            self.app.notify("Both replies must end first (Ctrl+X stops them)", severity="warning")
            return
        if any(m is None for m in self.models):
            self.app.notify("Both models must be loaded first", severity="warning")
            return
        inp = self.query_one(ChatInput)
        inp.remember(text)
        inp.clear()
        self.prompt_id += 1
        self.stop_event = threading.Event()
        sampling = self.app.settings.sampling
        for side, model in enumerate(self.models):
            view = self.query_one(f"#compare-view-{side}", VerticalScroll)
            view.mount(TurnView("user", text))
            reply = TurnView("assistant", "", who=self.names[side], stop_key=key_name(self, "stop", "^x"))
            reply.streaming = True
            view.mount(reply)
            view.anchor()
            self.replies[side] = reply
            self.done[side] = False
            prompt_id, stop = self.prompt_id, self.stop_event
            self.run_worker(
                lambda side=side, model=model: self._stream(side, model, text, sampling, stop, prompt_id),
                thread=True,
                group=f"compare-{side}",
                exit_on_error=False,
            )

    def _stream(self, side: int, model, text: str, sampling, stop, prompt_id: int) -> None:
        from engine.events import GenerationFailed, GenerationFinished, TokenGenerated

        reply = ""
        try:
            for event in model.stream(model.encode_chat([{"role": "user", "content": text}]), sampling, stop):
                if isinstance(event, TokenGenerated):
                    reply += event.text
                    self.post_message(CompareProgress(side, prompt_id, reply))
                elif isinstance(event, (GenerationFinished, GenerationFailed)):
                    self.post_message(CompareDone(side, prompt_id, event))
                    return
        except Exception as exc:
            self.post_message(CompareDone(side, prompt_id, GenerationFailed(error=f"{type(exc).__name__}: {exc}".splitlines()[0])))
            return
        self.post_message(CompareDone(side, prompt_id, GenerationFailed(error="the model stopped without finishing")))

    def on_compare_progress(self, message: CompareProgress) -> None:
        reply = self.replies[message.side]
        if message.prompt_id == self.prompt_id and reply is not None:
            reply.set_text(message.text)

    def on_compare_done(self, message: CompareDone) -> None:
        from engine.events import GenerationFailed

        if message.prompt_id != self.prompt_id:
            return
        side, event, reply = message.side, message.event, self.replies[message.side]
        self.done[side] = True
        head = Text(one_line(self.names[side], 40), style="bold")
        if isinstance(event, GenerationFailed):
            reply.finish(error=event.error)
            head.append(" \u00b7 failed", style="red")
        else:
            reply.finish(event.text, stopped=event.stop_reason == "cancelled")
            head.append(f" \u00b7 {event.new_tokens} tokens")
            if event.tokens_per_s:
                head.append(f" \u00b7 {event.tokens_per_s:.0f} tok/s", style="green")
            if event.time_to_first_token_s is not None:
                head.append(f" \u00b7 first token {event.time_to_first_token_s * 1000:.0f} ms", style="dim")
        self.query_one(f"#compare-head-{side}", Static).update(head)

    def action_stop(self) -> None:
        self.stop_event.set()

    def action_close(self) -> None:
        self.stop_event.set()
        self.app.pop_screen()

    def on_unmount(self) -> None:
        self.stop_event.set()
