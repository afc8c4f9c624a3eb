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
from tui.widgets.footer import AppFooter
from tui.keymap import key_display, with_keys
from tui.messages import ReplyDone, ReplyProgress
from tui.reply_stream import stream_reply
from tui.safe import one_line
from tui.screens.chat import REPLY_UPDATE_INTERVAL_S


@dataclass
class CompareLoaded(Message):
    side: int
    model: object | None
    error: str | None = None


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
        self.prompt_id = 0  # prompts sent so far
        self.stream_ids = [0, 0]  # each side's current stream (reply_id of its messages)
        self.next_stream = 0
        self.stop_event = threading.Event()
        self.done = [True, True]

    def compose(self) -> ComposeResult:
        yield Static(Text(with_keys(self.app, "Compare: the same prompt to both \u00b7 <compare.close> back"), style="bold"), id="compare-status")
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
            self.app.notify(with_keys(self.app, "Both replies must end first (<compare.stop> stops them)"), severity="warning")
            return
        if any(m is None for m in self.models):
            self.app.notify("Both models must be loaded first", severity="warning")
            return
        inp = self.query_one(ChatInput)
        inp.remember(text)
        inp.clear()
        self.prompt_id += 1
        self.stop_event.set()  # replies still streaming to the last prompt stop
        self.stop_event = threading.Event()
        sampling = self.app.settings.sampling
        messages = [{"role": "user", "content": text}]
        for side, model in enumerate(self.models):
            view = self.query_one(f"#compare-view-{side}", VerticalScroll)
            view.mount(TurnView("user", text))
            reply = TurnView("assistant", "", who=self.names[side], stop_key=key_display(self.app, "compare.stop"))
            reply.streaming = True
            view.mount(reply)
            view.anchor()
            self.replies[side] = reply
            self.done[side] = False
            self.next_stream += 1
            self.stream_ids[side] = stream_id = self.next_stream
            prompt = lambda model=model: (model.encode_chat(messages), 0)  # noqa: E731
            self.run_worker(
                lambda model=model, stream_id=stream_id, prompt=prompt, stop=self.stop_event: stream_reply(
                    self, stream_id, model, prompt, sampling, stop, REPLY_UPDATE_INTERVAL_S
                ),
                thread=True,
                group=f"compare-{side}",
                exclusive=True,
                exit_on_error=False,
            )

    def _side_of(self, reply_id: int) -> int | None:
        return self.stream_ids.index(reply_id) if reply_id in self.stream_ids else None

    def on_reply_progress(self, message: ReplyProgress) -> None:
        side = self._side_of(message.reply_id)
        if side is not None and self.replies[side] is not None:
            self.replies[side].set_text(message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        from engine.events import GenerationFailed

        side = self._side_of(message.reply_id)
        if side is None:  # a reply to an earlier prompt
            return
        event, reply = message.event, self.replies[side]
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
