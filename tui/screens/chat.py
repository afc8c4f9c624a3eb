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
from engine.errors import UsageError
from engine.store.settings import Sampling

from tui.store.conversations import LEAF, Turn
from tui.widgets.footer import AppFooter
from tui.keymap import key_display, with_keys
from tui.messages import ReplyDone, ReplyProgress, ReplyStarted
from tui.reply_stream import stream_reply
from tui.safe import literal, one_line

# How the status line names a chat's own sampling values (those that differ from the defaults).
SAMPLING_LABELS = [("temperature", "temp"), ("top_k", "top-k"), ("top_p", "top-p"), ("repetition_penalty", "rep"),
                   ("max_new_tokens", "max"), ("seed", "seed")]


def _as_dict(sampling: Sampling | None) -> dict | None:
    from dataclasses import asdict

    return None if sampling is None else asdict(sampling)


# How often a streaming reply is redrawn, at most (seconds): ~20 updates a second read as
# smooth, and the decode keeps the interpreter the rest of the time (bench/app_latency.py).
REPLY_UPDATE_INTERVAL_S = 0.05

WELCOME_NONE = (
    "No checkpoint yet.\n\n"
    "Press Enter (or <chat.train_default>) to train the default model: a small chat model (the 'seed' GPT-2, "
    "6 layers x 128 wide) on the chitchat conversations, shipped with the app, for 3 minutes on a "
    "CPU (1 on a GPU), plus a minute or so to prepare its tokenizer and data. The chat uses the "
    "model as soon as it is saved; train it further later from <app.checkpoints> (<ckpt.resume>).\n\n"
    "Or press <app.training> to choose your own dataset, size and steps, or <app.checkpoints> to pick a saved model or one "
    "from the Hugging Face cache."
)


VERSIONS = Binding.Group("Versions")  # the footer shows the two version keys as one entry


class ChatScreen(Screen):
    BINDINGS = [
        # Not in the footer: the streaming reply says "esc stops" (a key that came and went in
        # the footer rebuilt it twice per reply, ~100 ms of the UI thread on a 2-core machine).
        Binding("escape", "stop", "Stop reply", id="chat.stop", show=False),
        # Versions of a turn (an edit or a regenerated reply keeps the earlier one): in the
        # footer first, only while the chat has some.  Alt: the input keeps its arrows and Ctrl+arrows.
        Binding("alt+left", "version(-1)", "Previous version", id="chat.prev_version", group=VERSIONS),
        Binding("alt+right", "version(1)", "Next version", id="chat.next_version", group=VERSIONS),
        Binding("alt+up", "select_turn(-1)", "Earlier turn's versions", id="chat.prev_branch", show=False),
        Binding("alt+down", "select_turn(1)", "Later turn's versions", id="chat.next_branch", show=False),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("ctrl+t", "train_default", "Train default", id="chat.train_default", show=False),
        # (the input's TextArea keeps its own keys: Ctrl+E end of line, Ctrl+Y redo, ...)
        Binding("ctrl+o", "copy_reply", "Copy reply", id="chat.copy"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        # Priority: run before the input sees the next key, so keys typed right after (Ctrl+U,
        # text) edit the message the action put there, never the input as it was.
        Binding("ctrl+g", "edit_last", "Edit last", id="chat.edit", priority=True),
        Binding("ctrl+f", "correct_reply", "Correct reply", id="chat.correct", show=False, priority=True),
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
        self.reply_fresh = False  # that turn was just sent (a failed reply takes it back)
        self.context: tuple[int, int, int, int] | None = None  # prompt tokens, window, tokens cut, turns left out
        self.system_prompt: str | None = None  # the open chat's, sent before its turns
        self.chat_sampling: Sampling | None = None  # the open chat's own (None: it follows the defaults, F4)
        self.editing: Turn | None = None  # the turn in the input to be sent as its new version (Ctrl+G, Ctrl+F)
        self.selected: int | None = None  # the turn (index in self.turns) the version keys switch
        self.edit_note: NoteView | None = None  # says how an edit ends
        # Replies still streaming for a conversation that left the view (new chat, another
        # chat opened, deleted): reply id -> (conversation id or None to drop, checkpoint, the turn it answers).
        self.detached: dict[int, tuple] = {}
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
        if self.stop_event is not None:  # nothing outlives the app: a streaming reply stops
            self.stop_event.set()

    async def _on_command(self, command) -> None:
        """The app's requests (tui.messages.ChatCommand)."""
        if command.action == "new_chat":
            self.action_new_chat()
        elif command.action == "open":
            self.load_conversation(command.conversation_id, command.message_id)
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

    @property
    def sampling(self) -> Sampling:
        """The open chat's sampling settings: its own, or the defaults (F4)."""
        return self.chat_sampling or self.app.settings.sampling

    def _own_sampling(self, sampling: Sampling) -> Sampling | None:
        """A chat's own values; None when they are the defaults (the chat then follows them)."""
        return None if sampling == self.app.settings.sampling else sampling

    def set_sampling(self, sampling: Sampling) -> None:
        """The open chat's sampling (F4), stored with it; a chat whose values are the defaults
        follows the defaults (a new chat takes them when it starts)."""
        self.chat_sampling = self._own_sampling(sampling)
        if self.conversation_id is not None:
            self.app.conversations.set_sampling(self.conversation_id, _as_dict(self.chat_sampling))
        self.update_status()

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
            welcome = Vertical(Static(Text(with_keys(self.app, WELCOME_NONE)), id="welcome-text"), Button("Train the default model", id="train-default", variant="primary"), id="welcome")
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
        if self.chat_sampling is not None:  # this chat's own values, where they differ from the defaults
            own, defaults = self.chat_sampling, app.settings.sampling
            changed = [f"{label} {getattr(own, key)}" for key, label in SAMPLING_LABELS if getattr(own, key) != getattr(defaults, key)]
            if changed:
                text.append(" \u2502 ", style="dim")
                text.append(" \u00b7 ".join(changed), style="cyan")
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

    def turn_views(self) -> list[TurnView]:
        """The turns in the view, in order (not those being removed: a removal ends later)."""
        return [view for view in self.view.query(TurnView) if view.display]

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
        parent = self.reply_user_turn.id if self.reply_user_turn is not None else LEAF
        self.detached[self.reply_id] = (self.reply_conversation, self.reply_model, parent)
        self.reply, self.stop_event, self.reply_user_turn = None, None, None
        self.refresh_bindings()

    def clear_view(self) -> None:
        self.detach_reply()
        self._end_edit()
        self.selected = None
        for w in list(self.view.query("TurnView, NoteView")):
            w.remove()
        self.turns = []
        self.last_stats = ""
        self.context = None
        self._show_model_state()

    def load_conversation(self, conversation_id: int, message_id: int | None = None) -> None:
        """Open a saved chat (at ``message_id``'s branch when given: a search hit)."""
        store = self.app.conversations
        if message_id is not None:
            try:
                store.show(conversation_id, message_id)
            except KeyError:  # deleted since the search
                message_id = None
        conv = store.get(conversation_id)
        if conv is None:
            return
        self.clear_view()
        self.conversation_id = conversation_id
        self.system_prompt = conv.system_prompt
        self.show_system_prompt()
        self.chat_sampling = None
        if conv.sampling is not None:  # (read only: opening a chat writes nothing)
            try:
                self.chat_sampling = self._own_sampling(Sampling.from_dict(conv.sampling))
            except (ValueError, TypeError, UsageError) as exc:
                self.app.notify(one_line(f"This chat's sampling settings were unreadable ({exc}): it uses the defaults", 200), severity="warning")
        self.update_status()
        self.show_path()
        hit = next((i for i, t in enumerate(self.turns) if t.id == message_id), None)
        if hit is not None and self.turns[hit].versions > 1:  # the branch the search found
            self.selected = hit
            self._mark_versions()
        self.view.anchor()
        self.app.notify(f"Opened {one_line(conv.title, 40)!r}")
        self._restore_checkpoint(conv.checkpoint)

    # --- versions (branches) ---
    def _turn_view(self, turn: Turn) -> TurnView:
        who = None if turn.role == "user" else "Model" if turn.edited else (turn.checkpoint or "Model")
        return TurnView(turn.role, turn.content, who=who, stopped=turn.stopped, version=(turn.version, turn.versions), edited=turn.edited)

    def show_path(self) -> None:
        """Show the open chat's stored path (the chosen version of each turn)."""
        for w in list(self.view.query("TurnView, NoteView")):
            w.remove()
        self.turns = self.app.conversations.turns(self.conversation_id) if self.conversation_id is not None else []
        self._show_welcome(False)
        self.view.mount_all([self._turn_view(t) for t in self.turns])
        self._mark_versions()

    def _branched(self) -> list[int]:
        """The turns (indices) that have versions."""
        return [i for i, t in enumerate(self.turns) if t.versions > 1]

    def _mark_versions(self) -> None:
        """Each turn's "2/3" marker; the version keys switch the selected turn's (by default the
        last turn that has versions)."""
        branched = self._branched()
        if self.selected not in branched:
            self.selected = branched[-1] if branched else None
        for i, (turn, view) in enumerate(zip(self.turns, self.turn_views())):
            view.set_version((turn.version, turn.versions), i == self.selected)
        self.refresh_bindings()

    def action_version(self, step: int) -> None:
        """Show the previous / next version of the selected turn (and below it, the turns last
        shown under that version, else the newest)."""
        if self.selected is None or self.generating or self.editing is not None:
            return
        turn = self.turns[self.selected]
        versions = self.app.conversations.versions(turn.id)
        at = versions.index(turn.id) + step if turn.id in versions else -1
        if not 0 <= at < len(versions):
            self.app.bell()
            return
        self.app.conversations.show(self.conversation_id, versions[at])
        self.show_path()

    def action_select_turn(self, step: int) -> None:
        """The version keys move to an earlier / later turn that has versions."""
        branched = self._branched()
        if self.selected is None or not branched:
            return
        at = branched.index(self.selected) + step
        if not 0 <= at < len(branched):
            self.app.bell()
            return
        self.selected = branched[at]
        self._mark_versions()

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
        self.chat_sampling = None  # a new chat takes the defaults
        self.system_prompt = None  # a new chat starts without one
        self.show_system_prompt()
        self.clear_view()
        self.query_one(ChatInput).clear()
        self.query_one(ChatInput).focus()

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "stop":
            return self.generating or self.editing is not None
        if action in ("version", "select_turn"):
            if self.selected is None:
                return False  # (not in the footer: this chat has no versions)
            return None if self.generating or self.editing is not None else True
        return True

    def action_stop(self) -> None:
        """Esc: stop the streaming reply, or leave the edit in the input (the chat as it was)."""
        if self.stop_event is not None:
            self.stop_event.set()
        elif self.editing is not None:
            self._end_edit()
            self.query_one(ChatInput).clear()
            self.show_path()
            self.refresh_bindings()

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
        if self.editing is not None and self.editing.role == "assistant":
            self._save_correction(text)
            return
        if not self._can_reply():
            return
        inp = self.query_one(ChatInput)
        inp.remember(text)
        inp.clear()
        store = app.conversations
        if self.conversation_id is None:
            self.conversation_id = store.create(one_line(text, 60), app.active_name, self.system_prompt, _as_dict(self.chat_sampling))
        user = Turn("user", text)
        store.add(self.conversation_id, user, parent=self.turns[-1].id if self.turns else None)  # (an edit: a new version)
        self._end_edit()
        user.version = user.versions = len(store.versions(user.id))
        self.turns.append(user)
        self._add(self._turn_view(user))
        if user.versions > 1:  # the version keys switch the turn just given a new version
            self.selected = len(self.turns) - 1
        self._mark_versions()
        self._start_reply(user, fresh=True)

    def _save_correction(self, text: str) -> None:
        """The user's text becomes the reply's new version, marked as written by the user (a
        correction: "my saved chats" trains on it)."""
        reply = self.editing
        self._end_edit()
        store = self.app.conversations
        turn = Turn("assistant", text, edited=True)
        store.add(self.conversation_id, turn, parent=reply.parent_id)
        self.query_one(ChatInput).clear()
        self.show_path()
        self.selected = len(self.turns) - 1
        self._mark_versions()
        self.app.notify(with_keys(self.app, "Saved your reply as a new version (the model's is kept); to train on your chats: <app.training>, dataset saved-chats"), timeout=5)
        self.focus_input()

    def _can_reply(self) -> bool:
        """A reply can start now; else say why (nothing typed is cleared)."""
        app = self.app
        if self.generating:
            app.notify(with_keys(app, "A reply is still streaming: press <chat.stop> to stop it first"), severity="warning")
            return False
        if app.chat_model is None:
            if app.model_status == "loading":
                app.notify("The model is still loading\u2026", severity="warning")
            elif app.model_status == "none":
                app.notify(with_keys(app, "No model yet: press <chat.train_default> to train one, or <app.checkpoints> to pick one"), severity="warning")
            else:
                app.notify(with_keys(app, "No model is loaded: pick one with <app.checkpoints>"), severity="warning")
            return False
        return True

    def _start_reply(self, prompt_turn: Turn, fresh: bool = False) -> None:
        """Stream the model's answer to the conversation so far (its last turn is ``prompt_turn``;
        ``fresh``: just sent, so a failed reply takes it back)."""
        app = self.app
        chat = app.chat_model
        self.reply_user_turn = prompt_turn
        self.reply_fresh = fresh
        self.reply_conversation = self.conversation_id
        self.reply_id += 1
        self.reply_model = app.active_name
        self.reply = TurnView("assistant", "", who=self.reply_model or "Model")
        self.reply.stop_key = key_display(self.app, "chat.stop")
        self.reply.streaming = True
        self._add(self.reply)
        self.view.anchor()
        self.stop_event = threading.Event()
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages = system + [{"role": t.role, "content": t.content} for t in self.turns]
        reply_id, stop, sampling = self.reply_id, self.stop_event, self.sampling
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
        replies = [v for v in self.turn_views() if v.role == "assistant" and not v.streaming]
        reply = replies[-1] if replies else None
        if reply is None or not reply.choices or reply.tokenizer is None:
            self.app.notify("No reply to inspect: token details are kept for replies made in this session", severity="warning")
            return
        from tui.screens.inspector import InspectorScreen

        tokenizer = reply.tokenizer
        self.app.push_screen(InspectorScreen(reply.choices, lambda i: tokenizer.decode([i]), f"Token inspector \u00b7 {reply.who}"))

    def _drop_from_view(self, n: int) -> None:
        """Take the last ``n`` turns out of the view (the stored chat keeps them: a regenerated
        reply or an edited message becomes their new version)."""
        views = self.turn_views()
        for _ in range(n):
            self.turns.pop()
            if views:
                views.pop().remove()
        for note in list(self.view.query(NoteView)):
            note.remove()

    def action_regenerate(self) -> None:
        """A new version of the last reply (the earlier one is kept)."""
        if self._last_reply() is None or len(self.turns) < 2:
            self.app.notify("No reply to regenerate yet", severity="warning")
            return
        if self.editing is not None or not self._can_reply():
            return
        self._drop_from_view(1)
        self._start_reply(self.turns[-1])

    def action_edit_last(self) -> None:
        """Take the last message back into the input (its reply leaves the view): sent, it
        becomes the message's new version, with a new reply; the earlier version is kept."""
        last_user = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=None)
        self._edit(last_user, "No message to edit yet")

    def action_correct_reply(self) -> None:
        """Take the last reply into the input: what Enter sends is saved as the reply's new
        version, marked as written by you (a correction to train on), and no reply is made."""
        self._edit(len(self.turns) - 1 if self._last_reply() is not None else None, "No reply to correct yet")

    def _end_edit(self) -> None:
        self.editing = None
        if self.edit_note is not None:
            self.edit_note.remove()
            self.edit_note = None

    def _edit(self, index: int | None, none_message: str) -> None:
        if self.generating:
            self.app.notify(with_keys(self.app, "A reply is still streaming: press <chat.stop> to stop it first"), severity="warning")
            return
        if self.editing is not None:
            self.action_stop()  # (another edit was under way: the chat as it was first)
        if index is None or self.turns[index].id is None:
            self.app.notify(none_message, severity="warning")
            return
        turn = self.turns[index]
        self._drop_from_view(len(self.turns) - index)
        self.editing = turn
        what = "the reply, as you would have it (typing replaces it all)" if turn.role == "assistant" else "your message"
        self.edit_note = NoteView(with_keys(self.app, f"editing {what}: Enter saves it as a new version (the earlier one is kept); <chat.stop> cancels"))
        self._add(self.edit_note)
        inp = self.query_one(ChatInput)
        inp.load_text(turn.content)
        if turn.role == "assistant":  # a correction is mostly new text: typing replaces it all
            inp.select_all()
        else:
            inp.move_cursor(inp.document.end)
        inp.focus()
        self.refresh_bindings()

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
            if self.reply_fresh:
                self._unsend(user_turn)
            else:  # a regenerated reply failed: the chat as it was
                self.show_path()
            self.app.notify(one_line(f"Reply failed: {event.error}", 200), severity="error")
        else:
            stopped = event.stop_reason == "cancelled"
            reply.finish(event.text, stopped=stopped)
            reply.choices, reply.tokenizer = message.choices, getattr(self.app.chat_model, "tokenizer", None)
            turn = Turn("assistant", event.text, stopped=stopped, checkpoint=self.reply_model)
            self.turns.append(turn)
            if self.conversation_id is not None:
                store = self.app.conversations
                store.add(self.conversation_id, turn, parent=user_turn.id if user_turn is not None else LEAF)
                turn.version = turn.versions = len(store.versions(turn.id))
                if turn.versions > 1:
                    self.selected = len(self.turns) - 1
                self._mark_versions()
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

        conversation_id, model, parent = self.detached.pop(reply_id)
        store = self.app.conversations
        if conversation_id is None or isinstance(event, GenerationFailed) or store.get(conversation_id) is None:
            return
        stopped = event.stop_reason == "cancelled"
        store.add(conversation_id, Turn("assistant", event.text, stopped=stopped, checkpoint=model), parent=parent)

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
