"""minigpt-tui's Textual app.

The first frame paints before torch/transformers are imported: the engine's heavy modules are
imported only on worker threads (model loading, generation, training).  Workers only post
messages; engine events reach the UI as Textual messages (see tui.messages).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import replace

from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.signal import Signal

from engine.store.settings import Settings, load_settings, save_settings

from tui.screens.chat import ChatScreen
from tui.keymap import with_keys
from tui.commands import ChatsProvider, CheckpointsProvider, ScreensProvider
from tui.store.conversations import ConversationStore
from tui.state.active_model import ActiveModel
from tui.messages import ChatCommand, ConversationDeleted
from tui.state.run_state import RunState
from tui.safe import one_line
from tui.state.training_control import TrainingControl

# Test and benchmark hooks: write "<unix time> <torch imported 0|1>" to this file once the
# first frame has been painted, and exit right after when MINIGPT_TUI_EXIT_AFTER_FIRST_FRAME=1.
FIRST_FRAME_ENV = "MINIGPT_TUI_FIRST_FRAME"
EXIT_AFTER_FIRST_FRAME_ENV = "MINIGPT_TUI_EXIT_AFTER_FIRST_FRAME"

DARK, LIGHT = "textual-dark", "textual-light"


class MiniGPTApp(ActiveModel, TrainingControl, App[int]):
    """Chat (F1), training (F2) and checkpoints (F3) around one active model.  The model's life
    cycle is in ``tui.state.active_model``, training runs in ``tui.state.training_control``."""

    CSS_PATH = "app.tcss"
    TITLE = "minigpt-tui"
    # The chat is the first screen; the others are imported when first shown (start-up time).
    MODES = {"chat": ChatScreen, "training": lambda: _training_screen(), "checkpoints": lambda: _checkpoints_screen()}
    DEFAULT_MODE = "chat"
    COMMANDS = App.COMMANDS | {ScreensProvider, CheckpointsProvider, ChatsProvider}
    BINDINGS = [
        # Priority: the F keys work from any widget (TextArea binds F6/F7 to selections).
        Binding("f1", "switch_mode('chat')", "Chat", id="app.chat", priority=True),
        Binding("f2", "switch_mode('training')", "Training", id="app.training", priority=True),
        Binding("f3", "switch_mode('checkpoints')", "Checkpoints", id="app.checkpoints", priority=True),
        Binding("f4", "sampling", "Sampling", id="app.sampling", priority=True),
        Binding("f5", "conversations", "Chats", id="app.conversations", priority=True),
        Binding("f6", "help", "Help", id="app.help", priority=True),
        Binding("f7", "toggle_theme", "Theme", id="app.theme", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    # The first-run model: engine.training.config.first_run_config (the "seed" preset, the tutorial's 6x128
    # GPT-2, with the engine's defaults): a small chat model on the offline chitchat conversations,
    # for 3 minutes of training on a CPU, 1 on a GPU.  Resume it from F3 to train further.
    DEFAULT_PRESET = "seed"

    # What screens watch (``self.watch(app, ...)``) instead of the app calling into them:
    model_status: reactive[str] = reactive("starting", init=False)  # starting|loading|ready|failed|none
    model_revision: reactive[int] = reactive(0, init=False)  # the active model, its status or decode path changed
    run_revision: reactive[int] = reactive(0, init=False)  # the training run changed (started, eval, sample, log, end)
    run_progress: reactive[int] = reactive(0, init=False)  # a training step (coalesced)
    store_revision: reactive[int] = reactive(0, init=False)  # the checkpoint store changed

    def __init__(self, checkpoint: str | None = None, *, autoload: bool = True, conversations_path=None):
        super().__init__()
        self.requested = checkpoint
        self.autoload = autoload
        self._notices: list[str] = []
        self.settings: Settings = load_settings(notify=self._notices.append)
        if self.settings.theme in (DARK, LIGHT) or self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self.chat_model = None
        self.active_name: str | None = None
        self.active_kind: str | None = None  # "checkpoint" | "folder"
        self.model_error = ""
        self.run_state = RunState()
        self.views: dict[str, object] = {}  # screens by mode, as they mount (for tests and tools)
        self.chat_commands: Signal[ChatCommand] = Signal(self, "chat-commands")
        self.open_conversation_id: int | None = None  # the chat's conversation (the chat sets it)
        self._conversations: ConversationStore | None = None
        self._conversations_lock = threading.Lock()
        self._conversations_path = conversations_path
        self._first_frame_done = False
        self.quitting = False  # Ctrl+Q is waiting for a training run's save
        self.force_quit = False  # a second Ctrl+Q: quit without waiting for that save
        self.exit_note = ""  # printed after the app ends (what a forced quit lost)

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None, markup: bool = False) -> None:
        """Notifications carry names, paths and error text: never parse them as markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # --- start-up ---
    @property
    def conversations(self) -> ConversationStore:
        """The conversation database (any thread); opened on a worker after the first frame
        (the open runs an integrity check), or by whoever needs it first."""
        warning = None
        with self._conversations_lock:
            if self._conversations is None:
                self._conversations = ConversationStore(self._conversations_path)
                warning = self._conversations.warning
            store = self._conversations
        if warning:  # (outside the lock: the UI thread may be waiting for it)
            if threading.get_ident() == self._thread_id:
                self.notify(warning, severity="warning", timeout=15)
            else:
                self.call_from_thread(self.notify, warning, severity="warning", timeout=15)
        return store

    def _open_conversations_in_background(self) -> None:
        self.conversations

    def on_mount(self) -> None:
        for message in self._notices:
            self.notify(message, severity="warning", timeout=10)
        self.call_after_refresh(self._after_first_frame)

    def _after_first_frame(self) -> None:
        if self._first_frame_done:
            return
        self._first_frame_done = True
        path = os.environ.get(FIRST_FRAME_ENV)
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"{time.time():.6f} {int('torch' in sys.modules)}\n")
            if os.environ.get(EXIT_AFTER_FIRST_FRAME_ENV) == "1":
                self.exit(0)
                return
        self.apply_user_keymap()
        self.run_worker(self._open_conversations_in_background, thread=True, group="conversations", exit_on_error=False)
        if self.autoload:
            self.run_worker(self._pick_startup_model, thread=True, group="startup", exit_on_error=False)
        else:
            self.model_status = "none"

    def apply_user_keymap(self) -> None:
        """keymap.json in the config dir (binding id -> keys), checked against the ids of every
        binding in the app (its screens, dialogs and widgets: ``tui.keymap.binding_owners``)."""
        from engine.store.paths import keymap_file

        from tui.keymap import binding_ids, binding_owners, load_keymap

        path = keymap_file()
        if not path.exists():
            return
        keymap, problems = load_keymap(path, binding_ids(*binding_owners()))
        for problem in problems:
            self.notify(one_line(problem, 200), severity="warning", timeout=10)
        if keymap:
            self.set_keymap(keymap)

    # --- settings, dialogs ---
    def _save_settings(self) -> None:
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.notify(f"Cannot save settings: {exc.strerror or exc}", severity="error")

    def action_sampling(self) -> None:
        from tui.screens.sampling import SamplingScreen

        if isinstance(self.screen, SamplingScreen):
            return

        chat = self.views.get("chat")

        def done(chosen) -> None:
            if chosen is None:
                return
            sampling, make_default = chosen
            if make_default:
                self.settings = replace(self.settings, sampling=sampling)
                self._save_settings()
            chat.set_sampling(sampling)
            self.notify("Sampling saved for this chat" + (" and as the default for new chats" if make_default else ""))

        self.push_screen(SamplingScreen(chat.sampling, self.settings.sampling), done)

    def action_conversations(self) -> None:
        from tui.screens.saved_chats import ConversationsScreen

        if isinstance(self.screen, ConversationsScreen):
            return

        def done(chosen) -> None:
            if chosen is not None:
                self.open_conversation(*chosen)

        self.push_screen(ConversationsScreen(self.conversations, self.open_conversation_id), done)

    def _tell_chat(self, action: str, conversation_id: int | None = None, message_id: int | None = None) -> None:
        """Switch to the chat, then ask it (once the switch is done)."""
        self.switch_mode("chat")
        self.call_after_refresh(lambda: self.chat_commands.publish(ChatCommand(action, conversation_id, message_id)))

    def open_conversation(self, conversation_id: int, message_id: int | None = None) -> None:
        """Open a saved chat; at ``message_id``'s branch when given (a search hit)."""
        self._tell_chat("open", conversation_id, message_id)

    def use_checkpoint(self, name: str) -> None:
        self.activate_checkpoint(name)
        self.switch_mode("chat")

    def on_conversation_deleted(self, message: ConversationDeleted) -> None:
        self.chat_commands.publish(ChatCommand("conversation_deleted", message.conversation_id))

    def action_new_chat(self) -> None:
        self._tell_chat("new_chat")

    def action_chat_action(self, action: str) -> None:
        """A chat action from anywhere (the palette): in the chat screen."""
        self._tell_chat(action)

    def action_train_default(self) -> None:
        self.train_default()

    def action_help(self) -> None:
        """Open the help, or close it: its key (a priority binding) reaches the help screen too."""
        from tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    def watch_theme(self, theme: str) -> None:
        if getattr(self, "settings", None) is not None and self.settings.theme != theme:
            self.settings = replace(self.settings, theme=theme)
            self._save_settings()

    # --- quitting ---
    async def action_quit(self) -> None:
        """Quit with exit code 0 from anywhere: a streaming reply is stopped, a training run
        is stopped and saved first (cancel(save=True), then wait for it).  A second Ctrl+Q while
        that save runs quits at once and says what is lost."""
        self.chat_commands.publish(ChatCommand("stop"))
        state = self.run_state
        if self.quitting and state.running:
            self.force_quit = True
            self.exit_note = self._lost_on_force_quit()
            self.exit(0, message=self.exit_note)
            return
        if state.running:
            self.quitting = True
            state.stop_requested = True
            if state.job is not None:
                state.job.cancel(save=True)
            self.sub_title = "saving the training run before quitting\u2026"
            self.notify(
                with_keys(self, "Saving the training run before quitting\u2026 Press <app.quit> again to quit now without that save."),
                timeout=600,
            )
            await asyncio.to_thread(state.done.wait)
        self.exit(0)

    def _lost_on_force_quit(self) -> str:
        state = self.run_state
        name = state.name or "the training run"
        step = state.step.step if state.step is not None else None
        saved = state.saved.step if state.saved is not None else None
        if saved is None:
            return f"Quit without saving: {name} had no checkpoint yet; its training{f' (step {step})' if step else ''} is lost."
        return f"Quit without the last save: {name} keeps its checkpoint at step {saved}; training after it{f' (to step {step})' if step else ''} is lost."

    def on_unmount(self) -> None:
        """Nothing outlives the app: a training run is stopped and saved (unless the user chose to
        quit without the save), and waited for.  (The chat stops its own reply when it unmounts.)"""
        state = self.run_state
        if state.running and not state.done.is_set():
            state.stop_requested = True
            if state.job is not None:
                state.job.cancel(save=not self.force_quit)
            # A worker that never got to run sets nothing: give it a moment to start and see
            # the stop, then wait for the run it started to save and end.
            deadline = time.monotonic() + 5
            while not self.force_quit and not state.done.wait(0.1):
                if not state.worker_started and time.monotonic() > deadline:
                    break
        with self._conversations_lock:
            if self._conversations is not None:
                self._conversations.close()
        if self.chat_model is not None:
            self.chat_model.close_process()  # (a child also ends by itself when the app's pipe closes)


def _training_screen():
    from tui.screens.training import TrainingScreen

    return TrainingScreen()


def _checkpoints_screen():
    from tui.screens.checkpoint_picker import CheckpointsScreen

    return CheckpointsScreen()


def run_app(checkpoint: str | None = None) -> int:
    """Run the app; returns the exit code."""
    app = MiniGPTApp(checkpoint=checkpoint)
    app.run()
    if app.force_quit:
        # The training thread may be inside its save: leave now (saves are atomic, so the
        # previous checkpoint stays whole) instead of waiting for the thread at exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(app.return_code or 0)
    return app.return_code or 0
