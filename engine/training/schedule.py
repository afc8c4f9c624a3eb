"""Wall-clock training budgets: ``--time 30m``.

A ``TrainClock`` counts training time only: evaluation, sampling, saving and pauses are
measured apart (``overhead_s``, ``paused_s``) and left out, so a budget buys optimizer steps.
``budget_lr_factor`` is the learning-rate multiplier of a warmup / stable / warmdown schedule
that follows that clock instead of the step count, so a run ends on time with its rate decayed.
Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import time

from engine.errors import UsageError

WARMUP_FRACTION = 0.05  # of the budget: the rate rises linearly from ~0 ...
WARMDOWN_FRACTION = 0.3  # ... and falls linearly over the last 30% of the budget ...
FINAL_LR_FRACTION = 0.0  # ... to this fraction of the peak at the end of the budget

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|sec|s)")


def parse_duration(text: str, flag: str = "--time") -> float:
    """'90s', '30m', '2h', '1h30m', '1.5h' -> seconds.  A bare number is refused (which unit?)."""
    raw = str(text).strip().lower()
    if not raw:
        raise UsageError(f"{flag}: expected a duration such as 90s, 30m or 2h")
    pos, total = 0, 0.0
    for match in _PART.finditer(raw):
        if raw[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or raw[pos:].strip():
        hint = f" (did you mean {raw}m or {raw}s?)" if re.fullmatch(r"\d+(\.\d+)?", raw) else ""
        raise UsageError(f"{flag} {text!r}: expected a duration such as 90s, 30m, 2h or 1h30m{hint}")
    if not total > 0 or not math.isfinite(total):
        raise UsageError(f"{flag} must be longer than 0 seconds (got {text!r})")
    return total


class Duration(float):
    """Seconds, made from a number or from how people write a duration: ``Duration("1h30m")``.

    It is the type of ``--time``: a text argparse cannot read raises ``ArgumentTypeError``, whose
    message argparse prints as it is (a ValueError would become "invalid Duration value")."""

    def __new__(cls, value: "str | float" = 0.0):
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except UsageError as exc:
                raise argparse.ArgumentTypeError(str(exc).removeprefix("--time ")) from None
        return super().__new__(cls, value)


def format_duration(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def budget_lr_factor(
    train_s: float,
    budget_s: float,
    warmup_s: float | None = None,
    warmdown_fraction: float = WARMDOWN_FRACTION,
    final: float = FINAL_LR_FRACTION,
) -> float:
    """Multiplier of the peak rate after ``train_s`` seconds of a ``budget_s`` budget."""
    warmup_s = WARMUP_FRACTION * budget_s if warmup_s is None else warmup_s
    if warmup_s > 0 and train_s < warmup_s:
        return max(train_s, 0.0) / warmup_s
    decay_start = budget_s * (1.0 - warmdown_fraction)
    if train_s <= decay_start:
        return 1.0
    progress = min(1.0, (train_s - decay_start) / max(budget_s - decay_start, 1e-9))
    return 1.0 - (1.0 - final) * progress


class TrainClock:
    """Training seconds: wall time since ``start()`` plus ``offset`` (time already spent on
    this budget before a resume), minus what ran inside ``excluded(...)`` blocks."""

    def __init__(self, offset: float = 0.0, now=time.perf_counter):
        self.offset = float(offset)
        self._now = now
        self._started: float | None = None
        self._marked: float | None = None
        self._excluded = 0.0
        self._inside = 0
        self._entered = 0.0
        self.overhead_s = 0.0  # evaluation, sampling, saving
        self.paused_s = 0.0

    def start(self) -> None:
        if self._started is None:
            self._started = self._now()

    @property
    def marked_s(self) -> float:
        """Training time at the last ``mark()`` (``offset`` before the first): what the
        schedule and the stop decision read, the same number on every process."""
        return self._marked if self._marked is not None else self.offset

    def mark(self, value: float | None = None) -> float:
        self._marked = self.train_s() if value is None else float(value)
        return self._marked

    @property
    def started(self) -> bool:
        return self._started is not None

    def train_s(self) -> float:
        """Training time so far, including ``offset``."""
        if self._started is None:
            return self.offset
        now = self._now()
        current = now - self._entered if self._inside else 0.0
        return self.offset + (now - self._started) - self._excluded - current

    @contextlib.contextmanager
    def excluded(self, kind: str = "overhead"):
        """Time spent in the block does not count as training ("overhead" or "pause")."""
        outer = self._inside == 0
        if outer:
            self._entered = self._now()
        self._inside += 1
        try:
            yield
        finally:
            self._inside -= 1
            if outer:
                spent = self._now() - self._entered
                self._excluded += spent
                if kind == "pause":
                    self.paused_s += spent
                else:
                    self.overhead_s += spent
