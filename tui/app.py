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

from engine.settings import Settings, load_settings, save_settings

from .chat import ChatScreen
from .commands import ChatsProvider, CheckpointsProvider, ScreensProvider
from .conversations import ConversationStore
from .messages import CheckpointsChanged, ConversationDeleted, ModelFailed, ModelReady, TrainEventMessage, TrainProgress
from .messages import DecodePathChanged
from .run_state import RunState
from .safe import one_line

# Test and benchmark hooks: write "<unix time> <torch imported 0|1>" to this file once the
# first frame has been painted, and exit right after when MINIGPT_TUI_EXIT_AFTER_FIRST_FRAME=1.
FIRST_FRAME_ENV = "MINIGPT_TUI_FIRST_FRAME"
EXIT_AFTER_FIRST_FRAME_ENV = "MINIGPT_TUI_EXIT_AFTER_FIRST_FRAME"

DARK, LIGHT = "textual-dark", "textual-light"


class MiniGPTApp(App[int]):
    """Chat (F1), training (F2) and checkpoints (F3) around one active model."""

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

    # The first-run model: the engine's default preset ("seed", the tutorial's 6x128 GPT-2) on
    # the default dataset (WikiText-2; the built-in corpus offline) for 300 steps (~600K
    # tokens): minutes on a laptop CPU, seconds on a GPU.  Resume it from F3 to train further.
    DEFAULT_PRESET = "seed"
    DEFAULT_STEPS = 300

    model_status: reactive[str] = reactive("starting", init=False)  # starting|loading|ready|failed|none

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
        self.views: dict[str, object] = {}
        self._conversations: ConversationStore | None = None
        self._conversations_lock = threading.Lock()
        self._conversations_path = conversations_path
        self._load_token = 0
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
        """keymap.json in the config dir (binding id -> keys), checked against the app's ids."""
        from engine.paths import keymap_file

        from .chat_widgets import ChatInput
        from .checkpoints import CheckpointsScreen
        from .conversations_screen import ConversationsScreen
        from .keymap import binding_ids, load_keymap
        from .training import TrainingScreen

        known = binding_ids(type(self), ChatScreen, ChatInput, TrainingScreen, CheckpointsScreen, ConversationsScreen)
        keymap, problems = load_keymap(keymap_file(), known)
        for problem in problems:
            self.notify(one_line(problem, 200), severity="warning", timeout=10)
        if keymap:
            self.set_keymap(keymap)

    def _pick_startup_model(self) -> None:
        """Which checkpoint to open: --checkpoint, else the last active one, else the newest."""
        from engine.checkpoints import CheckpointStore

        infos = CheckpointStore().list()
        by_name = {i.name: i for i in infos}
        notes = []
        choice = None
        for wanted, why in ((self.requested, "--checkpoint"), (self.settings.active_checkpoint, "last active")):
            if not wanted:
                continue
            info = by_name.get(wanted)
            if info is None:
                notes.append(f"No checkpoint named '{wanted}' ({why})")
            elif not info.ok:
                notes.append(f"Checkpoint '{wanted}' is broken: {info.broken}")
            else:
                choice = wanted
                break
        if choice is None:
            good = [i for i in infos if i.ok]
            if good:
                choice = max(good, key=lambda i: (str(i.meta.get("updated") or i.meta.get("created") or ""), i.name)).name
        self.call_from_thread(self._startup_choice, choice, notes)

    def _startup_choice(self, choice: str | None, notes: list[str]) -> None:
        for note in notes:
            self.notify(one_line(note, 200), severity="error", timeout=10)
        if choice is None:
            self.model_status = "none"
        else:
            self.activate_checkpoint(choice)

    # --- the active model ---
    def activate_checkpoint(self, name: str) -> None:
        self._activate("checkpoint", name, name)
        if self.settings.active_checkpoint != name:
            self.settings = replace(self.settings, active_checkpoint=name)
            self._save_settings()

    def activate_folder(self, path: str, label: str) -> None:
        self._activate("folder", label, path)

    def _activate(self, kind: str, name: str, ref: str) -> None:
        chat = self.views.get("chat")
        if chat is not None and chat.generating:
            chat.action_stop()
        self._load_token += 1
        token = self._load_token
        self.chat_model = None
        self.active_name, self.active_kind = name, kind
        self.model_error = ""
        self.model_status = "loading"
        self._mutate_status()
        self.run_worker(lambda: self._load_model(token, kind, name, ref), thread=True, group="model", exit_on_error=False)

    def _load_model(self, token: int, kind: str, name: str, ref: str) -> None:
        try:
            from engine.generate import ChatModel

            if kind == "checkpoint":
                model = ChatModel.from_checkpoint(ref)
            else:
                model = ChatModel.from_folder(ref, name=name)
        except Exception as exc:  # EngineError or a library failure: one line for the user
            from engine.errors import EngineError

            error = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            self.post_message(ModelFailed(token, name, error.splitlines()[0] if error else type(exc).__name__))
            return
        self.post_message(ModelReady(token, model))
        # The fast decode path checks itself and warms up here, off the UI thread: replies take
        # the reference path until it is ready, and the status line says which one runs.
        model.warm_up()
        self.post_message(DecodePathChanged(token))

    def on_decode_path_changed(self, message: DecodePathChanged) -> None:
        if message.token == self._load_token:
            self._mutate_status()

    def on_model_ready(self, message: ModelReady) -> None:
        if message.token != self._load_token:
            return
        self.chat_model = message.model
        self.model_status = "ready"
        chat = self.views.get("chat")
        if chat is not None:
            chat.add_note(f"now chatting with {self.active_name}")
        self._mutate_status()

    def on_model_failed(self, message: ModelFailed) -> None:
        if message.token != self._load_token:
            return
        self.model_error = message.error
        self.model_status = "failed"
        self.notify(one_line(f"Cannot load {message.name}: {message.error}", 300), severity="error", timeout=10)
        self._mutate_status()

    def _mutate_status(self) -> None:
        chat = self.views.get("chat")
        if chat is not None:
            chat.update_status()
        picker = self.views.get("checkpoints")
        if picker is not None:
            picker._fill()

    # --- checkpoint store changes (from the picker) ---
    def rename_checkpoint(self, old: str, new: str) -> None:
        self._store_worker("rename", lambda store: store.rename(old, new), lambda: self._renamed(old, new))

    def delete_checkpoint(self, name: str) -> None:
        self._store_worker("delete", lambda store: store.delete(name), lambda: self._deleted(name))

    def _store_worker(self, what: str, operation, then) -> None:
        """Run a checkpoint-store change on a worker (disk work never blocks the UI), then
        ``then`` on the UI thread, or a one-line error."""

        def work() -> None:
            from engine.checkpoints import CheckpointStore
            from engine.errors import EngineError

            try:
                operation(CheckpointStore())
            except (EngineError, OSError) as exc:
                self.call_from_thread(self.notify, one_line(f"Cannot {what}: {exc}", 200), severity="error")
                return
            self.call_from_thread(then)

        self.run_worker(work, thread=True, group="store", exit_on_error=False)

    def _renamed(self, old: str, new: str) -> None:
        self.notify(f"Renamed '{old}' to '{new}'")
        if self.active_kind == "checkpoint" and self.active_name == old:
            self.active_name = new
            if self.chat_model is not None:
                self.chat_model.name = new
        if self.settings.active_checkpoint == old:
            self.settings = replace(self.settings, active_checkpoint=new)
            self._save_settings()
        self.post_message(CheckpointsChanged())

    def _deleted(self, name: str) -> None:
        self.notify(f"Deleted '{name}'")
        if self.settings.active_checkpoint == name:
            self.settings = replace(self.settings, active_checkpoint=None)
            self._save_settings()
        if self.active_kind == "checkpoint" and self.active_name == name:
            self.chat_model = None
            self.active_name = self.active_kind = None
            self._load_token += 1
            self.model_status = "none"
        self.post_message(CheckpointsChanged())

    def on_checkpoints_changed(self, _message: CheckpointsChanged) -> None:
        picker = self.views.get("checkpoints")
        if picker is not None:
            picker.reload()
        self._mutate_status()

    # --- training ---
    def train_default(self) -> None:
        if self.run_state.running:
            self.switch_mode("training")
            return
        from engine.train import TrainConfig

        if self.start_training(TrainConfig(preset=self.DEFAULT_PRESET, max_steps=self.DEFAULT_STEPS)):
            self.notify("Training the default model. Chat becomes available when it is saved.", timeout=6)
            self.switch_mode("training")

    def start_training(self, config) -> bool:
        if self.run_state.running:
            self.notify("A run is already going (F2)", severity="warning")
            return False
        state = RunState(status="starting", config=config, name=config.resume or config.name)
        self.run_state = state
        state.log.append(f"starting: preset {config.preset}, dataset {config.dataset or 'default'}" if not config.resume else f"resuming '{config.resume}' to step {config.max_steps}")
        self._refresh_training(full=True)
        self.run_worker(lambda: self._train(state), thread=True, group="train", name="train", exit_on_error=False)
        return True

    def _train(self, state: RunState) -> None:
        """Worker thread: run the job; every event becomes a message."""
        from engine.events import TrainFailed, TrainStep
        from engine.train import TrainingJob

        def sink(event) -> None:
            if isinstance(event, TrainStep):
                state.record_step(event)
                self.post_message(TrainProgress(event))
            else:
                self.post_message(TrainEventMessage(event))

        state.worker_started = True
        try:
            job = TrainingJob(state.config, sink)
            state.job = job
            if state.stop_requested:
                job.cancel(save=True)
            job.run()
        except Exception as exc:
            self.post_message(TrainEventMessage(TrainFailed(error=f"training failed: {type(exc).__name__}: {exc}".splitlines()[0])))
        finally:
            state.done.set()

    def pause_training(self) -> None:
        state = self.run_state
        if state.status == "running" and state.job is not None:
            state.job.pause()
            state.status = "pausing"
            self._refresh_training()

    def resume_training(self) -> None:
        state = self.run_state
        if state.status in ("paused", "pausing") and state.job is not None:
            state.job.resume()
            state.status = "running"
            self._refresh_training()

    def stop_training(self) -> None:
        state = self.run_state
        if not state.running or state.status == "stopping":
            return
        state.stop_requested = True
        if state.job is not None:
            state.job.cancel(save=True)
        state.status = "stopping"
        state.log.append("stopping: a checkpoint is saved first")
        self._refresh_training(log=state.log[-1])

    def on_train_progress(self, message: TrainProgress) -> None:
        state = self.run_state
        was_starting = state.status == "starting"
        state.apply(message.event)
        if was_starting:
            self._refresh_training()
        view = self.views.get("training")
        if view is not None:
            view.update_progress()

    def on_train_event_message(self, message: TrainEventMessage) -> None:
        from engine import events as ev

        event = message.event
        line = self.run_state.apply(event)
        if isinstance(event, ev.CheckpointSaved):
            self.post_message(CheckpointsChanged())
        elif isinstance(event, ev.TrainFinished):
            self.notify(f"Training finished: '{event.name}' saved")
            self._after_run(event.name)
        elif isinstance(event, ev.TrainCancelled) and event.saved:
            self._after_run(event.name)
        elif isinstance(event, ev.TrainFailed):
            self.notify(one_line(f"Training failed: {event.error}", 300), severity="error", timeout=10)
        self._refresh_training(event=event, log=line)

    def _after_run(self, name: str) -> None:
        self.post_message(CheckpointsChanged())
        if self.chat_model is None and self.model_status in ("none", "failed", "starting"):
            self.activate_checkpoint(name)
            self.notify(f"Chat now uses '{name}' (F1)")

    def _refresh_training(self, full: bool = False, event=None, log: str | None = None) -> None:
        view = self.views.get("training")
        if view is None:
            return
        if full:
            view.sync()
            return
        from engine import events as ev

        if isinstance(event, ev.TrainEval):
            view.update_eval()
        elif isinstance(event, ev.TrainSample):
            view.update_sample()
        elif isinstance(event, ev.TrainStarted):
            view.update_progress()
        if log:
            view.add_log(log)
        view.update_controls()
        chat = self.views.get("chat")
        if chat is not None:
            chat.update_status()

    # --- settings, dialogs ---
    def _save_settings(self) -> None:
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.notify(f"Cannot save settings: {exc.strerror or exc}", severity="error")

    def action_sampling(self) -> None:
        from .sampling import SamplingScreen

        if isinstance(self.screen, SamplingScreen):
            return

        def done(sampling) -> None:
            if sampling is not None:
                self.settings = replace(self.settings, sampling=sampling)
                self._save_settings()
                self.notify("Sampling settings saved")

        self.push_screen(SamplingScreen(self.settings.sampling), done)

    def action_conversations(self) -> None:
        from .conversations_screen import ConversationsScreen

        if isinstance(self.screen, ConversationsScreen):
            return
        chat = self.views.get("chat")

        def done(conversation_id) -> None:
            if conversation_id is not None:
                self.open_conversation(conversation_id)

        self.push_screen(ConversationsScreen(self.conversations, chat.conversation_id if chat else None), done)

    def open_conversation(self, conversation_id: int) -> None:
        self.switch_mode("chat")
        self.call_after_refresh(lambda: self.views["chat"].load_conversation(conversation_id))

    def use_checkpoint(self, name: str) -> None:
        self.activate_checkpoint(name)
        self.switch_mode("chat")

    def on_conversation_deleted(self, message: ConversationDeleted) -> None:
        chat = self.views.get("chat")
        if chat is not None and chat.conversation_id == message.conversation_id:
            chat.action_new_chat()

    def action_new_chat(self) -> None:
        self.switch_mode("chat")
        self.call_after_refresh(lambda: self.views["chat"].action_new_chat())

    def action_chat_action(self, action: str) -> None:
        """A chat action from anywhere (the palette): in the chat screen."""
        self.switch_mode("chat")
        self.call_after_refresh(lambda: self.views["chat"].run_action(action))

    def action_train_default(self) -> None:
        self.train_default()

    def action_help(self) -> None:
        from .help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
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
        chat = self.views.get("chat")
        if chat is not None and chat.stop_event is not None:
            chat.stop_event.set()
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
                "Saving the training run before quitting\u2026 Press Ctrl+Q again to quit now without that save.",
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
        """Nothing outlives the app: a reply is stopped; a training run is stopped and saved
        (unless the user chose to quit without the save), and waited for."""
        chat = self.views.get("chat")
        if chat is not None and chat.stop_event is not None:
            chat.stop_event.set()
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


def _training_screen():
    from .training import TrainingScreen

    return TrainingScreen()


def _checkpoints_screen():
    from .checkpoints import CheckpointsScreen

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
