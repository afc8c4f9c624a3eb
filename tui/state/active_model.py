"""The active model's life cycle, as a part of the app (a mixin of ``MiniGPTApp``).

Which checkpoint opens at start-up (``--checkpoint``, else the last active one, else the
newest); loading a checkpoint or a model folder on an exclusive worker (a newer request
cancels an older one, whose results are then dropped); the fast decode path's warm-up after it
loads; and the checkpoint store's renames and deletes, run on workers, with what they mean for
the active model.  The app's reactives (``model_status``, ``model_revision``,
``store_revision``) tell the screens.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from tui.messages import CheckpointsChanged, DecodePathChanged, ModelFailed, ModelReady
from tui.safe import one_line


def decode_process_wanted() -> bool:
    """Replies decode in a child process unless MINIGPT_DECODE_PROCESS=0 (CPU models only)."""
    import os

    return os.environ.get("MINIGPT_DECODE_PROCESS", "1") != "0"


class ActiveModel:
    """Model loading and the checkpoint store, for ``MiniGPTApp`` (which holds the state:
    ``chat_model``, ``active_name``, ``active_kind``, ``model_status``, ``model_error``)."""

    def _pick_startup_model(self) -> None:
        """Which checkpoint to open: --checkpoint, else the last active one, else the newest."""
        from engine.store.checkpoints import CheckpointStore

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
                choice = max(good, key=lambda i: (i.record.updated or i.record.created or "", i.name)).name
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
        """Load another model (the chat stops a reply still streaming when the status turns "loading")."""
        self._drop_model()
        self.active_name, self.active_kind = name, kind
        self.model_error = ""
        self.model_status = "loading"
        self.model_revision += 1
        # exclusive: a newer load cancels this one; its messages then carry a cancelled worker
        self.run_worker(lambda: self._load_model(kind, name, ref), thread=True, group="model", exclusive=True, exit_on_error=False)

    def _load_model(self, kind: str, name: str, ref: str) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()
        try:
            from engine.generation.chat_model import ChatModel

            if kind == "checkpoint":
                model = ChatModel.from_checkpoint(ref)
            else:
                model = ChatModel.from_folder(ref, name=name)
        except Exception as exc:  # EngineError or a library failure: one line for the user
            from engine.errors import EngineError

            error = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            self.post_message(ModelFailed(worker, name, error.splitlines()[0] if error else type(exc).__name__))
            return
        self.post_message(ModelReady(worker, model))
        # The fast decode path checks itself and warms up here, off the UI thread: replies take
        # the reference path until it is ready, and the status line says which one runs.
        model.warm_up()
        self.post_message(DecodePathChanged(worker))
        # Then a child process loads the same model and takes the replies, so repainting a
        # streaming reply never stalls its decode (engine/generation/decode_process.py); until it is
        # ready, or if it cannot start, replies decode on a thread here.
        if decode_process_wanted() and not worker.is_cancelled:
            model.start_process((kind, ref))
            if worker.is_cancelled:  # another model was chosen meanwhile
                model.close_process()
            else:
                self.post_message(DecodePathChanged(worker))

    def _drop_model(self) -> None:
        """Forget the active model; its decode process (if any) ends off the UI thread."""
        old, self.chat_model = self.chat_model, None
        if old is not None:  # (also reaps a child that died: close_process is a no-op without one)
            threading.Thread(target=old.close_process, name="minigpt-close-decoder", daemon=True).start()

    def on_decode_path_changed(self, message: DecodePathChanged) -> None:
        if not message.worker.is_cancelled:
            self.model_revision += 1

    def on_model_ready(self, message: ModelReady) -> None:
        if message.worker.is_cancelled:  # another model was chosen since: this one is not used
            threading.Thread(target=message.model.close_process, name="minigpt-close-decoder", daemon=True).start()
            return
        self.chat_model = message.model
        self.model_status = "ready"
        self.model_revision += 1

    def on_model_failed(self, message: ModelFailed) -> None:
        if message.worker.is_cancelled:
            return
        self.model_error = message.error
        self.model_status = "failed"
        self.notify(one_line(f"Cannot load {message.name}: {message.error}", 300), severity="error", timeout=10)
        self.model_revision += 1

    # --- checkpoint store changes (from the picker) ---
    def rename_checkpoint(self, old: str, new: str) -> None:
        self._store_worker("rename", lambda store: store.rename(old, new), lambda: self._renamed(old, new))

    def delete_checkpoint(self, name: str) -> None:
        self._store_worker("delete", lambda store: store.delete(name), lambda: self._deleted(name))

    def _store_worker(self, what: str, operation, then) -> None:
        """Run a checkpoint-store change on a worker (disk work never blocks the UI), then
        ``then`` on the UI thread, or a one-line error."""

        def work() -> None:
            from engine.store.checkpoints import CheckpointStore
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
            self._drop_model()
            self.active_name = self.active_kind = None
            self.workers.cancel_group(self, "model")  # a load still under way is not used
            self.model_status = "none"
        self.post_message(CheckpointsChanged())

    def on_checkpoints_changed(self, _message: CheckpointsChanged) -> None:
        self.store_revision += 1
        self.model_revision += 1  # the active one may have been renamed or deleted
