"""The chat screen: conversation view, streaming replies, input, live status."""

from __future__ import annotations

import threading

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Static

from tui.widgets.turns import ChatInput, NoteView, TurnView
from tui.store.conversations import Turn
from tui.widgets.footer import AppFooter, key_name
from tui.messages import ReplyDone, ReplyProgress, ReplyStarted
from tui.reply_stream import stream_reply
from tui.safe import literal, one_line

# How often a streaming reply is redrawn, at most (seconds): ~20 updates a second read as
# smooth, and the decode keeps the interpreter the rest of the time (bench/app_latency.py).
REPLY_UPDATE_INTERVAL_S = 0.05

WELCOME_NONE = (
    "No checkpoint yet.\n\n"
    "Press Enter (or Ctrl+T) to train the default model: a small chat model (the 'seed' GPT-2, "
    "6 layers x 128 wide) on the chitchat conversations, shipped with the app, for 3 minutes on a "
    "CPU (1 on a GPU), plus a minute or so to prepare its tokenizer and data. The chat uses the "
    "model as soon as it is saved; train it further later from F3 (t).\n\n"
    "Or press F2 to choose your own dataset, size and steps, or F3 to pick a saved model or one "
    "from the Hugging Face cache."
)


class ChatScreen(Screen):
    BINDINGS = [
        # Not in the footer: the streaming reply says "esc stops" (a key that came and went in
        # the footer rebuilt it twice per reply, ~100 ms of the UI thread on a 2-core machine).
        Binding("escape", "stop", "Stop reply", id="chat.stop", show=False),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("ctrl+t", "train_default", "Train default", id="chat.train_default", show=False),
        # (the input's TextArea keeps its own keys: Ctrl+E end of line, Ctrl+Y redo, ...)
        Binding("ctrl+o", "copy_reply", "Copy reply", id="chat.copy"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("ctrl+g", "edit_last", "Edit last", id="chat.edit"),
        # (Ctrl+Y is the input's redo; Ctrl+S is free in the chat and the input)
        Binding("ctrl+s", "system_prompt", "System prompt", id="chat.system"),
        Binding("f8", "inspect", "Inspect tokens", id="chat.inspect"),
        # Neither is the input's (TextArea) nor the app's (F1-F7), nor a terminal's (Ctrl+B: tmux)
        Binding("ctrl+l", "copy_code", "Copy code", id="chat.copy_code", show=False),
        Binding("f9", "toggle_raw", "Raw text", id="chat.raw", show=False),
    ]

    def __init__(self):
        super().__init__(id="chat-screen")
        self._conversation_id: int | None = None
        self.turns: list[Turn] = []
        self.reply: TurnView | None = None
        self.reply_id = 0
        self.stop_event: threading.Event | None = None
        self.reply_model: str | None = None
        self.reply_conversation: int | None = None  # where the streaming reply belongs
        self.reply_user_turn: Turn | None = None  # the turn the streaming reply answers
        self.context: tuple[int, int, int, int] | None = None  # prompt tokens, window, tokens cut, turns left out
        self.system_prompt: str | None = None  # the open chat's, sent before its turns
        # Replies still streaming for a conversation that left the view (new chat, another
        # chat opened, deleted): reply id -> (conversation id or None to drop, checkpoint).
        self.detached: dict[int, tuple[int | None, str | None]] = {}
        self.last_stats: str = ""

    # --- layout ---
    def compose(self) -> ComposeResult:
        yield Static("", id="chat-status")
        yield Static("", id="chat-system")  # the chat's system prompt, one line (hidden without one)
        yield VerticalScroll(id="conversation")  # the welcome joins it when there is no model
        yield ChatInput(id="chat-input")
        yield AppFooter()

    def on_mount(self) -> None:
        app = self.app
        app.views["chat"] = self
        self.query_one("#conversation", VerticalScroll).anchor()
        self.watch(app, "model_status", self._model_changed, init=True)
        self.watch(app, "model_revision", self.update_status, init=False)
        self.watch(app, "run_revision", self.update_status, init=False)
        app.chat_commands.subscribe(self, self._on_command)
        self.query_one(ChatInput).focus()

    def on_unmount(self) -> None:
        self.action_stop()  # nothing outlives the app: a streaming reply stops

    async def _on_command(self, command) -> None:
        """The app's requests (tui.messages.ChatCommand)."""
        if command.action == "new_chat":
            self.action_new_chat()
        elif command.action == "open":
            self.load_conversation(command.conversation_id)
        elif command.action == "conversation_deleted":
            if command.conversation_id == self.conversation_id:
                self.action_new_chat()
        elif command.action == "stop":
            self.action_stop()
        else:
            await self.run_action(command.action)

    @property
    def conversation_id(self) -> int | None:
        return self._conversation_id

    @conversation_id.setter
    def conversation_id(self, value: int | None) -> None:
        self._conversation_id = value
        self.app.open_conversation_id = value  # the saved-chats screen marks it

    @property
    def generating(self) -> bool:
        return self.reply is not None

    # --- status ---
    def _model_changed(self, old: str, status: str) -> None:
        app = self.app
        if status in ("loading", "none") and self.generating:
            self.action_stop()  # another model is coming, or this one was deleted: its reply ends here
        if status == "ready" and old != "ready":
            self.add_note(f"now chatting with {app.active_name}")
        self._show_model_state()

    def _show_model_state(self) -> None:
        """The welcome (no model, no turns), the focus in the input, the status line."""
        status = self.app.model_status
        self._show_welcome(status == "none" and not self.turns)
        self.focus_input()
        self.update_status()

    def _show_welcome(self, show: bool) -> None:
        """The first-run panel, mounted the first time there is no model (not in the first
        frame: most launches have a model, and the app paints sooner without it)."""
        found = self.query("#welcome")
        if found:
            found.first().display = show
        elif show:
            welcome = Vertical(Static(Text(WELCOME_NONE), id="welcome-text"), Button("Train the default model", id="train-default", variant="primary"), id="welcome")
            if self.view.children:
                self.view.mount(welcome, before=0)
            else:
                self.view.mount(welcome)

    def focus_input(self) -> None:
        """Focus lands where the user types: the chat input (Enter on an empty input trains the
        default model while there is none).  Never on the first-run button, which hides as soon
        as a model or a turn appears and would take the next Enter with it."""
        if self.app.screen is self:
            self.query_one(ChatInput).focus()

    def on_screen_resume(self) -> None:
        self.focus_input()

    def update_status(self) -> None:
        app = self.app
        status = app.model_status
        text = Text()
        name = app.active_name
        if status == "ready":
            text.append("\u25cf ", style="green")
            text.append(one_line(name or "", 40), style="bold")
        elif status == "loading":
            text.append("\u25cc loading ", style="yellow")
            text.append(one_line(name or "model", 40), style="bold")
            text.append("\u2026")
        elif status == "starting":
            text.append("\u25cc starting the engine\u2026", style="yellow")
        elif status == "failed":
            text.append("\u2716 ", style="red")
            text.append(one_line(f"{name}: {app.model_error}", 160), style="red")
        else:
            text.append("\u25cb no model", style="dim")
        decode_path = getattr(app.chat_model, "decode_path", None) if status == "ready" else None
        if decode_path:  # which decode loop runs replies: "fast" or "reference" (engine/generation/chat_model.py)
            where = " (process)" if app.chat_model.in_child_process else ""
            text.append(f" \u2502 {decode_path} decode{where}", style="dim")
        if app.run_state.running:
            text.append(" \u2502 training ", style="dim")
            text.append(one_line(app.run_state.name or "", 24), style="dim")
        if self.context is not None:
            used, window, cut, dropped = self.context
            text.append(" \u2502 ctx ", style="dim")
            text.append(f"{used}/{window}", style="yellow" if cut or dropped else "")
            if cut or dropped:
                what = [f"{dropped} turn{'s' if dropped != 1 else ''}"] if dropped else []
                what += [f"{cut} tok"] if cut else []
                text.append(f" (\u2702 {', '.join(what)} cut)", style="yellow")
        if self.last_stats:
            text.append(" \u2502 ")
            text.append(self.last_stats)
        self.query_one("#chat-status", Static).update(text, layout=False)  # one line, always

    def show_system_prompt(self) -> None:
        """The chat's system prompt on one line under the status (literal text), or nothing."""
        line = self.query_one("#chat-system", Static)
        prompt = self.system_prompt
        line.display = bool(prompt)
        if prompt:
            text = Text("System: ", style="bold")
            text.append_text(literal(one_line(prompt, 400)))
            line.update(text)

    # --- conversation view ---
    @property
    def view(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    def _add(self, widget) -> None:
        self._show_welcome(False)
        self.view.mount(widget)

    def add_note(self, text: str) -> None:
        if self.turns or self.generating:
            self._add(NoteView(text))

    def detach_reply(self) -> None:
        """The conversation leaves the view while a reply streams: stop the reply; when it ends
        it is saved to its own conversation (dropped if that was deleted), never shown in another."""
        if self.reply is None:
            return
        if self.stop_event is not None:
            self.stop_event.set()
        self.detached[self.reply_id] = (self.reply_conversation, self.reply_model)
        self.reply, self.stop_event, self.reply_user_turn = None, None, None
        self.refresh_bindings()

    def clear_view(self) -> None:
        self.detach_reply()
        for w in list(self.view.query("TurnView, NoteView")):
            w.remove()
        self.turns = []
        self.last_stats = ""
        self.context = None
        self._show_model_state()

    def load_conversation(self, conversation_id: int) -> None:
        store = self.app.conversations
        conv = store.get(conversation_id)
        if conv is None:
            return
        self.clear_view()
        self.conversation_id = conversation_id
        self.system_prompt = conv.system_prompt
        self.show_system_prompt()
        self.turns = store.turns(conversation_id)
        self._show_welcome(False)
        self.view.mount_all(
            [
                TurnView(t.role, t.content, who=None if t.role == "user" else (t.checkpoint or "Model"), stopped=t.stopped)
                for t in self.turns
            ]
        )
        self.view.anchor()
        self.app.notify(f"Opened {one_line(conv.title, 40)!r}")
        self._restore_checkpoint(conv.checkpoint)

    def _restore_checkpoint(self, name: str | None) -> None:
        """A saved chat goes on with the checkpoint it was held with, when that still exists."""
        app = self.app
        if not name or (app.active_kind == "checkpoint" and app.active_name == name):
            return
        from engine.store.checkpoints import CheckpointStore
        from engine.errors import EngineError

        try:
            there = CheckpointStore().path(name).is_dir()  # one stat: no store walk on the UI thread
        except EngineError:
            there = False
        if there:
            app.activate_checkpoint(name)
            self.add_note(f"this chat was held with {name}: switching to it")
        else:
            current = f"; going on with {app.active_name}" if app.active_name else ""
            self.add_note(f"this chat was held with {name}, which is gone{current}")

    # --- actions ---
    def action_new_chat(self) -> None:
        self.conversation_id = None
        self.system_prompt = None  # a new chat starts without one
        self.show_system_prompt()
        self.clear_view()
        self.query_one(ChatInput).clear()
        self.query_one(ChatInput).focus()

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "stop":
            return self.generating
        return True

    def action_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    def action_train_default(self) -> None:
        self.app.train_default()

    def action_system_prompt(self) -> None:
        """Edit the open chat's system prompt (empty: none); the next reply is made with it."""
        from tui.screens.dialogs import PromptScreen

        def done(value: str | None) -> None:
            if value is None:  # cancelled
                return
            self.system_prompt = value or None
            if self.conversation_id is not None:
                self.app.conversations.set_system_prompt(self.conversation_id, self.system_prompt)
            self.show_system_prompt()
            self.app.notify("System prompt set: the next reply uses it" if value else "System prompt cleared", timeout=3)
            self.focus_input()

        self.app.push_screen(
            PromptScreen(
                "System prompt for this chat (sent before its turns; empty: none)",
                self.system_prompt or "",
                placeholder="e.g. You are a friendly assistant. Answer briefly.",
            ),
            done,
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "train-default":
            event.stop()
            self.app.train_default()

    def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        text = event.text
        app = self.app
        if not text.strip():
            if app.chat_model is None and app.model_status == "none" and not self.turns:
                app.train_default()
            return
        if not self._can_reply():
            return
        inp = self.query_one(ChatInput)
        inp.remember(text)
        inp.clear()
        store = app.conversations
        if self.conversation_id is None:
            self.conversation_id = store.create(one_line(text, 60), app.active_name, self.system_prompt)
        user = Turn("user", text)
        user.id = store.add(self.conversation_id, user)
        self.turns.append(user)
        self._add(TurnView("user", text))
        self._start_reply(user)

    def _can_reply(self) -> bool:
        """A reply can start now; else say why (nothing typed is cleared)."""
        app = self.app
        if self.generating:
            app.notify("A reply is still streaming: press Esc to stop it first", severity="warning")
            return False
        if app.chat_model is None:
            if app.model_status == "loading":
                app.notify("The model is still loading\u2026", severity="warning")
            elif app.model_status == "none":
                app.notify("No model yet: press Ctrl+T to train one, or F3 to pick one", severity="warning")
            else:
                app.notify("No model is loaded: pick one with F3", severity="warning")
            return False
        return True

    def _start_reply(self, prompt_turn: Turn) -> None:
        """Stream the model's answer to the conversation so far (its last turn is ``prompt_turn``)."""
        app = self.app
        chat = app.chat_model
        self.reply_user_turn = prompt_turn
        self.reply_conversation = self.conversation_id
        self.reply_id += 1
        self.reply_model = app.active_name
        self.reply = TurnView("assistant", "", who=self.reply_model or "Model")
        self.reply.stop_key = key_name(self, "stop", "esc")
        self.reply.streaming = True
        self._add(self.reply)
        self.view.anchor()
        self.stop_event = threading.Event()
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages = system + [{"role": t.role, "content": t.content} for t in self.turns]
        reply_id, stop, sampling = self.reply_id, self.stop_event, app.settings.sampling
        self.refresh_bindings()
        # the most recent whole turns that leave room for the reply (a system prompt stays)
        prompt = lambda: chat.fit_chat(messages, sampling.max_new_tokens)  # noqa: E731
        self.run_worker(
            lambda: stream_reply(self, reply_id, chat, prompt, sampling, stop, REPLY_UPDATE_INTERVAL_S, details=True),
            thread=True,
            group="generate",
            name="generate",
            exclusive=True,  # one reply streams at a time (a stale one's messages carry an old reply_id)
            exit_on_error=False,
        )

    # --- copy, regenerate, edit ---
    def _last_reply(self) -> Turn | None:
        return self.turns[-1] if self.turns and self.turns[-1].role == "assistant" else None

    def action_copy_reply(self) -> None:
        turn = self._last_reply()
        if turn is None or not turn.content:
            self.app.notify("No reply to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(turn.content)  # OSC 52: works over SSH too
        self.app.notify(f"Copied the last reply ({len(turn.content):,} characters)", timeout=2)

    def action_copy_code(self) -> None:
        """The last code block of the last reply (read as Markdown, whatever the view shows)."""
        from tui.widgets.turns import last_code_block

        turn = self._last_reply()
        if turn is None or not turn.content:
            self.app.notify("No reply yet: no code block to copy", severity="warning")
            return
        found = last_code_block(turn.content)
        if found is None:
            self.app.notify("The last reply has no code block", severity="warning")
            return
        code, language = found
        self.app.copy_to_clipboard(code)  # OSC 52, like Ctrl+O
        lines = code.count("\n") + 1 if code else 0
        what = f"{language} code block" if language else "code block"
        self.app.notify(f"Copied the last {what} ({lines} line{'s' if lines != 1 else ''})", timeout=2)

    def action_toggle_raw(self) -> None:
        """Replies as Markdown or as their raw text (every reply shown, and the setting)."""
        from dataclasses import replace

        app = self.app
        markdown = not app.settings.markdown
        app.settings = replace(app.settings, markdown=markdown)
        app._save_settings()
        for view in self.view.query(TurnView):
            view.set_markdown(markdown)
        app.notify("Replies shown as Markdown" if markdown else "Replies shown as raw text", timeout=2)

    def action_inspect(self) -> None:
        """The token inspector over the last reply of this session."""
        replies = [v for v in self.view.query(TurnView) if v.role == "assistant" and not v.streaming]
        reply = replies[-1] if replies else None
        if reply is None or not reply.choices or reply.tokenizer is None:
            self.app.notify("No reply to inspect: token details are kept for replies made in this session", severity="warning")
            return
        from tui.screens.inspector import InspectorScreen

        tokenizer = reply.tokenizer
        self.app.push_screen(InspectorScreen(reply.choices, lambda i: tokenizer.decode([i]), f"Token inspector \u00b7 {reply.who}"))

    def _drop_last_turns(self, n: int) -> None:
        """Remove the last ``n`` turns from the view and the stored conversation."""
        store = self.app.conversations
        views = list(self.view.query(TurnView))
        for _ in range(n):
            turn = self.turns.pop()
            if turn.id is not None:
                store.remove_turn(turn.id)
            if views:
                views.pop().remove()

    def action_regenerate(self) -> None:
        if self._last_reply() is None or len(self.turns) < 2:
            self.app.notify("No reply to regenerate yet", severity="warning")
            return
        if not self._can_reply():
            return
        self._drop_last_turns(1)
        self._start_reply(self.turns[-1])

    def action_edit_last(self) -> None:
        """Take the last message back into the input (with its reply, if any) to edit and resend."""
        if self.generating:
            self.app.notify("A reply is still streaming: press Esc to stop it first", severity="warning")
            return
        last_user = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=None)
        if last_user is None:
            self.app.notify("No message to edit yet", severity="warning")
            return
        text = self.turns[last_user].content
        self._drop_last_turns(len(self.turns) - last_user)
        self._forget_if_empty()
        inp = self.query_one(ChatInput)
        inp.load_text(text)
        inp.move_cursor(inp.document.end)
        inp.focus()

    def _forget_if_empty(self) -> None:
        """A conversation whose every turn was taken back is not kept as an empty chat."""
        store = self.app.conversations
        if self.conversation_id is not None and not store.turns(self.conversation_id):
            store.delete(self.conversation_id)
            self.conversation_id = None

    # --- messages from the worker ---
    def on_reply_started(self, message: ReplyStarted) -> None:
        if message.reply_id != self.reply_id or self.reply is None:
            return
        event = message.event
        window = getattr(self.app.chat_model, "n_positions", None) or event.prompt_tokens + event.max_new_tokens
        dropped = getattr(event, "dropped_turns", 0)
        self.context = (event.prompt_tokens, window, event.truncated_tokens, dropped)
        if dropped:
            what = "oldest turn no longer fits" if dropped == 1 else f"oldest {dropped} turns no longer fit"
            self.view.mount(NoteView(f"(the {what} the model's window)"), before=self.reply)
        if event.truncated_tokens:
            note = NoteView(f"(the oldest {event.truncated_tokens} tokens of the chat no longer fit the model's window)")
            self.view.mount(note, before=self.reply)
        self.update_status()

    def on_reply_progress(self, message: ReplyProgress) -> None:
        if message.reply_id == self.reply_id and self.reply is not None:
            self.reply.set_text(message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        from engine.events import GenerationFailed

        if message.reply_id in self.detached:
            self._save_detached(message.reply_id, message.event)
            return
        if message.reply_id != self.reply_id or self.reply is None:
            return
        event, reply = message.event, self.reply
        user_turn = self.reply_user_turn
        self.reply, self.stop_event, self.reply_user_turn = None, None, None
        if isinstance(event, GenerationFailed):
            reply.finish(error=event.error)
            self._unsend(user_turn)
            self.app.notify(one_line(f"Reply failed: {event.error}", 200), severity="error")
        else:
            stopped = event.stop_reason == "cancelled"
            reply.finish(event.text, stopped=stopped)
            reply.choices, reply.tokenizer = message.choices, getattr(self.app.chat_model, "tokenizer", None)
            turn = Turn("assistant", event.text, stopped=stopped, checkpoint=self.reply_model)
            self.turns.append(turn)
            if self.conversation_id is not None:
                turn.id = self.app.conversations.add(self.conversation_id, turn)
            # How it ended comes first: on a narrow terminal the line's end (the timings) is what
            # is cut, never "stopped" or "token limit".
            parts = []
            if stopped:
                parts.append("stopped")
            elif event.stop_reason == "length":  # it did not end its turn: cut at max new tokens (F4)
                parts.append("token limit")
            parts.append(f"{event.new_tokens} tok")
            if event.tokens_per_s:
                parts.append(f"{event.tokens_per_s:.0f} tok/s")
            if event.time_to_first_token_s is not None:
                parts.append(f"1st token {event.time_to_first_token_s * 1000:.0f} ms")
            self.last_stats = " \u00b7 ".join(parts)
        self.update_status()
        self.refresh_bindings()

    def _save_detached(self, reply_id: int, event) -> None:
        from engine.events import GenerationFailed

        conversation_id, model = self.detached.pop(reply_id)
        store = self.app.conversations
        if conversation_id is None or isinstance(event, GenerationFailed) or store.get(conversation_id) is None:
            return
        stopped = event.stop_reason == "cancelled"
        store.add(conversation_id, Turn("assistant", event.text, stopped=stopped, checkpoint=model))

    def _unsend(self, user_turn: Turn | None) -> None:
        """A reply failed: its prompt leaves the stored conversation (no two user turns in a row)
        and goes back into the input, unless the user already typed something new there."""
        if user_turn is None or not self.turns or self.turns[-1] is not user_turn:
            return
        self.turns.pop()
        if user_turn.id is not None:
            self.app.conversations.remove_turn(user_turn.id)
        self._forget_if_empty()
        inp = self.query_one(ChatInput)
        if not inp.text.strip():
            inp.load_text(user_turn.content)
            inp.move_cursor(inp.document.end)
