"""What the app knows about the training run it started: plain state that engine events
update (``RunState.apply``), read by the training screen.  No Textual here."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


def fmt_s(seconds: float | None) -> str:
    """A duration as people read it: 45s, 3m07s, 1h05m."""
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class RunState:
    status: str = "idle"  # idle | starting | running | pausing | paused | stopping | finished | stopped | failed
    job: object | None = None
    config: object | None = None
    name: str | None = None
    started: object | None = None  # TrainStarted
    step: object | None = None  # latest TrainStep
    eval: object | None = None  # latest TrainEval
    sample: object | None = None  # latest TrainSample
    saved: object | None = None  # latest CheckpointSaved
    result: object | None = None  # TrainFinished | TrainCancelled | TrainFailed
    error: str | None = None
    steps: list[tuple[int, int, float, float]] = field(default_factory=list)  # (step, tokens seen, loss, lr): the worker appends (under lock)
    grad_norms: list[float] = field(default_factory=list)  # per step, where the engine reports one
    val_points: list[tuple[int, float]] = field(default_factory=list)  # (tokens seen, validation loss)
    samples: list = field(default_factory=list)  # every TrainSample, oldest first
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    stop_requested: bool = False
    worker_started: bool = False  # the worker thread is running (it sets ``done`` when it ends)

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running", "pausing", "paused", "stopping")

    def record_step(self, event) -> None:
        """From the training thread: every step's loss is kept (progress messages coalesce)."""
        with self.lock:
            self.steps.append((event.step, event.tokens_seen, event.loss, event.lr))
            if event.grad_norm is not None:
                self.grad_norms.append(event.grad_norm)

    def history(self) -> list[tuple[int, int, float, float]]:
        with self.lock:
            return list(self.steps)

    def grad_norm_history(self) -> list[float]:
        with self.lock:
            return list(self.grad_norms)

    def _tokens_at(self, step: int) -> int:
        """Tokens seen at ``step`` (an evaluation reports its step; the chart's axis is tokens)."""
        with self.lock:
            for at, tokens, _loss, _lr in reversed(self.steps):
                if at <= step:
                    return tokens
        return self.step.tokens_seen if self.step is not None else 0

    def apply(self, event) -> str | None:
        """Take in one engine event; returns the line it adds to the run's log, if any."""
        from engine import events as ev

        line = None
        if isinstance(event, ev.TrainStep):
            self.step = event
            if self.status == "starting":
                self.status = "running"
        elif isinstance(event, ev.Notice):
            line = f"note: {event.message}"
        elif isinstance(event, ev.TrainStarted):
            self.started, self.name = event, event.name
            if self.status == "starting":
                self.status = "running"
            line = (
                f"training '{event.name}': {event.preset}, {event.params / 1e6:.2f}M params on {event.dataset} "
                f"({event.train_tokens:,} train / {event.val_tokens:,} val tokens), {event.device}/{event.dtype}, "
                + (f"for {fmt_s(event.time_budget_s)} of training" if getattr(event, "time_budget_s", None) else f"steps {event.start_step}->{event.total_steps}")
            )
        elif isinstance(event, ev.TrainEval):
            self.eval = event
            self.val_points.append((self._tokens_at(event.step), event.val_loss))
            line = f"eval @ {event.step}: val loss {event.val_loss:.4f}, perplexity {event.perplexity:.1f}, bits/byte {event.bits_per_byte:.4f}"
            if getattr(event, "word_perplexity", None):
                line += f", word perplexity {event.word_perplexity:.1f}"
            if getattr(event, "eot_rate", None) is not None:
                line += f", end-of-turn {event.eot_rate:.0%}"
            if getattr(event, "ranking_top1", None) is not None:
                line += f", ranking {event.ranking_top1:.0%}"
        elif isinstance(event, ev.TrainSample):
            self.sample = event
            self.samples.append(event)
        elif isinstance(event, ev.CheckpointSaved):
            self.saved = event
            line = f"saved '{event.name}' at step {event.step}"
        elif isinstance(event, ev.TrainPaused):
            if self.status != "stopping":
                self.status = "paused"
            line = f"paused at step {event.step}"
        elif isinstance(event, ev.TrainResumed):
            if self.status != "stopping":
                self.status = "running"
            line = f"resumed at step {event.step}"
        elif isinstance(event, ev.TrainFinished):
            self.status, self.result = "finished", event
            line = f"finished '{event.name}' at step {event.step} in {fmt_s(event.elapsed_s)}"
        elif isinstance(event, ev.TrainCancelled):
            self.status, self.result = "stopped", event
            line = f"stopped at step {event.step} ({'saved' if event.saved else 'not saved'})"
        elif isinstance(event, ev.TrainFailed):
            self.status, self.result, self.error = "failed", event, event.error
            line = f"failed: {event.error}"
        if line:
            self.log.append(line)
        return line
