"""What the app knows about the training run it started (read by the training screen)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


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
    losses: list[float] = field(default_factory=list)  # appended by the worker (under lock)
    val_losses: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    stop_requested: bool = False

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running", "pausing", "paused", "stopping")

    def loss_history(self) -> list[float]:
        with self.lock:
            return list(self.losses)
