"""Training runs started from the app, as a part of it (a mixin of ``MiniGPTApp``).

A run is a ``TrainingJob`` on a worker thread whose events become messages; the UI thread
folds them into the plain ``RunState`` (``RunState.apply``) and bumps the app's reactives
(``run_revision``, ``run_progress``) that the training screen and the chat's status watch.
"""

from __future__ import annotations

from tui.messages import CheckpointsChanged, TrainEventMessage, TrainProgress
from tui.state.run_state import RunState
from tui.safe import one_line
from tui.keymap import key_for, with_keys


class TrainingControl:
    """Start, pause, resume and stop the app's training run; the first-run button's run."""

    def train_default(self) -> None:
        if self.run_state.running:
            self.switch_mode("training")
            return
        from engine.training.config import first_run_config

        # the budget depends on the device: decided on the worker (it imports torch)
        config = first_run_config(self.DEFAULT_PRESET, device="cpu")
        if self.start_training(config, first_run=True):
            self.notify("Training the default model. Chat becomes available when it is saved.", timeout=6)
            self.switch_mode("training")

    def start_training(self, config, first_run: bool = False) -> bool:
        if self.run_state.running:
            self.notify(with_keys(self, "A run is already going (<app.training>)"), severity="warning")
            return False
        state = RunState(status="starting", config=config, name=config.resume or config.name)
        self.run_state = state
        state.log.append(f"starting: preset {config.preset}, dataset {config.dataset or 'default'}" if not config.resume else f"resuming '{config.resume}' to step {config.max_steps}")
        self.run_revision += 1
        self.run_worker(lambda: self._train(state, first_run), thread=True, group="train", name="train", exit_on_error=False)
        return True

    def _train(self, state: RunState, first_run: bool = False) -> None:
        """Worker thread: run the job; every event becomes a message."""
        from engine.events import TrainFailed, TrainStep
        from engine.training.job import TrainingJob

        def sink(event) -> None:
            if isinstance(event, TrainStep):
                state.record_step(event)
                self.post_message(TrainProgress(event))
            else:
                self.post_message(TrainEventMessage(event))

        state.worker_started = True
        try:
            if first_run:
                from engine.training.config import first_run_config

                state.config = first_run_config(state.config.preset)
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
            self.run_revision += 1

    def resume_training(self) -> None:
        state = self.run_state
        if state.status in ("paused", "pausing") and state.job is not None:
            state.job.resume()
            state.status = "running"
            self.run_revision += 1

    def stop_training(self) -> None:
        state = self.run_state
        if not state.running or state.status == "stopping":
            return
        state.stop_requested = True
        if state.job is not None:
            state.job.cancel(save=True)
        state.status = "stopping"
        state.log.append("stopping: a checkpoint is saved first")
        self.run_revision += 1

    def on_train_progress(self, message: TrainProgress) -> None:
        state = self.run_state
        was_starting = state.status == "starting"
        state.apply(message.event)
        if was_starting:
            self.run_revision += 1
        self.run_progress += 1

    def on_train_event_message(self, message: TrainEventMessage) -> None:
        from engine import events as ev

        event = message.event
        self.run_state.apply(event)
        if isinstance(event, ev.CheckpointSaved):
            self.post_message(CheckpointsChanged())
        elif isinstance(event, ev.TrainFinished):
            self.notify(f"Training finished: '{event.name}' saved")
            self._after_run(event.name)
        elif isinstance(event, ev.TrainCancelled) and event.saved:
            self._after_run(event.name)
        elif isinstance(event, ev.TrainFailed):
            self.notify(one_line(f"Training failed: {event.error}", 300), severity="error", timeout=10)
        self.run_revision += 1

    def _after_run(self, name: str) -> None:
        # (the save before it posted CheckpointsChanged: every saved run ends with a CheckpointSaved)
        if self.chat_model is None and self.model_status in ("none", "failed", "starting"):
            self.activate_checkpoint(name)
            self.notify(f"Chat now uses '{name}' ({key_for(self, 'app.chat')})")
