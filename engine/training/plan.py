"""A run, resolved once: ``plan_run`` turns what was asked (a ``TrainConfig``) and, for
``--resume``, the saved run's record into a frozen ``RunPlan``: every default filled in and every
resume rule applied, before anything is loaded.  ``RunPlan.schedule`` adds what depends on the
data's size (steps, evaluation and save cadence, warmup).  Torch-free: unit-testable without
training, and the job, the callback and the checkpoint record read the same plan.

Resume rules: a resumed run continues with its own dataset, preset, block size, optimizer,
embedding rate and conversation speaker; a batch size, learning rate, warmdown or step count
given again replaces the saved one; a new ``--time`` starts a new budget, and without one a run
that had a budget continues with what is left of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from engine.errors import UsageError
from engine.model import Preset, get_preset
from engine.store.record import CheckpointRecord
from engine.training.config import EMBEDDING_LR_SCALE, UNCAPPED_STEPS, TrainConfig
from engine.training.schedule import format_duration



@dataclass(frozen=True)
class Schedule:
    """The step plan once the training rows are known."""

    batch_size: int  # rows per device per micro-batch
    rows_per_step: int  # batch x grad accumulation x processes
    steps_per_epoch: int
    total_steps: int  # UNCAPPED_STEPS: a time budget ends the run
    lr: float
    warmup_steps: int
    eval_every: int  # UNCAPPED_STEPS with timed_evals: the clock decides
    save_every: int
    timed_evals: bool  # evaluate (and save) EVALS_PER_BUDGET times per time budget (the callback's clock)

    @property
    def capped(self) -> bool:
        return self.total_steps < UNCAPPED_STEPS


@dataclass(frozen=True)
class RunPlan:
    config: TrainConfig  # the run's choices: the saved run's when resuming, defaults filled in
    name: str
    tokenizer_spec: str
    previous: CheckpointRecord | None = None  # the record of the run this one resumes
    start_step: int = 0
    budget_offset_s: float = 0.0  # training seconds already spent on the budget it continues

    @property
    def resuming(self) -> bool:
        return self.previous is not None

    @property
    def preset(self) -> Preset:
        return get_preset(self.config.preset)

    @property
    def budget_s(self) -> float | None:
        return self.config.time_budget

    def schedule(self, train_rows: int, world_size: int = 1) -> Schedule:
        cfg, preset = self.config, self.preset
        batch = cfg.batch_size or preset.batch_size
        per_step = batch * cfg.grad_accum * world_size
        steps_per_epoch = max(1, math.ceil(train_rows / per_step))
        if cfg.max_steps:
            total = cfg.max_steps
        elif self.budget_s and not cfg.epochs:
            total = UNCAPPED_STEPS  # the budget ends the run
        else:
            total = max(1, math.ceil((cfg.epochs or 1.0) * steps_per_epoch))
        if self.resuming and total <= self.start_step:
            raise UsageError(
                f"checkpoint '{self.name}' is already at step {self.start_step}: pass --max-steps above that to train on",
                field="max_steps",
            )
        timed_evals = bool(self.budget_s) and not cfg.eval_every
        eval_every = cfg.eval_every or (UNCAPPED_STEPS if timed_evals else min(1000, max(10, total // 10)))
        return Schedule(
            batch_size=batch,
            rows_per_step=per_step,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            lr=cfg.lr or preset.lr,
            warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else min(200, total // 20),
            eval_every=eval_every,
            save_every=cfg.save_every or eval_every,
            timed_evals=timed_evals,
        )


def default_name(cfg: TrainConfig, uses_builtin: bool, now: datetime | None = None) -> str:
    """PRESET-DATA-TIME, after the data the run will really read: without --dataset that is
    WikiText-2, or the built-in corpus when the hub cannot be reached (``uses_builtin``)."""
    stem = "builtin" if uses_builtin else Path(cfg.dataset or "wikitext").name.split(".")[0] or "data"
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in stem)[:40].strip("-.") or "data"
    return f"{cfg.preset}-{stem}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"


def plan_run(cfg: TrainConfig, name: str, previous: CheckpointRecord | None = None) -> RunPlan:
    """Resolve a run.  ``previous``: the saved record of the run ``cfg.resume`` names."""
    cfg.check()
    if cfg.resume and previous is None:
        raise UsageError(f"--resume {cfg.resume}: no record of that run", field="resume")
    if previous is None:
        cfg = replace(cfg, embedding_lr_scale=cfg.embedding_lr_scale or (1.0 if cfg.init else EMBEDDING_LR_SCALE))
        return RunPlan(config=cfg, name=name, tokenizer_spec=cfg.tokenizer_spec)
    p = previous
    steps_given = cfg.max_steps is not None
    cfg = replace(
        cfg,
        dataset=p.dataset_spec or cfg.dataset,
        dataset_config=p.dataset_config,
        preset=p.preset or cfg.preset,
        block_size=p.block_size or cfg.block_size,
        batch_size=cfg.batch_size or p.batch_size,
        lr=cfg.lr or p.lr,
        # a new --time replaces the old plan's step count; --max-steps sets one
        max_steps=cfg.max_steps or (None if cfg.time_budget else p.planned_steps),
        optimizer=_resumed_optimizer(cfg, p),
        warmdown=cfg.warmdown if cfg.warmdown is not None else p.warmdown,
        embedding_lr_scale=_resumed_embedding_lr_scale(cfg, p),
        word_level=cfg.word_level or p.word_level,
        assistant=p.assistant or cfg.assistant,
    )
    cfg, offset = _resumed_budget(cfg, p, name, steps_given)
    return RunPlan(
        config=cfg, name=name, tokenizer_spec=p.tokenizer_spec or cfg.tokenizer_spec, previous=p,
        start_step=p.steps, budget_offset_s=offset,
    )


def _resumed_embedding_lr_scale(cfg: TrainConfig, previous: CheckpointRecord) -> float:
    """The run's own (its optimizer state has the rate groups it was made with)."""
    saved = previous.embedding_lr_scale or 1.0
    if cfg.embedding_lr_scale is not None and cfg.embedding_lr_scale != saved:
        raise UsageError(f"--resume continues with the run's own --embedding-lr-scale ({saved:g}): leave it out", field="embedding_lr_scale")
    return saved


def _resumed_optimizer(cfg: TrainConfig, previous: CheckpointRecord) -> str:
    saved = previous.optimizer or "adamw"
    if cfg.optimizer not in ("adamw", saved):
        raise UsageError(f"--resume continues with the run's own optimizer ({saved}): leave out --optimizer", field="optimizer")
    return saved


def _resumed_budget(cfg: TrainConfig, previous: CheckpointRecord, name: str, steps_given: bool) -> tuple[TrainConfig, float]:
    """--resume: a new --time starts a new budget; without one, a run that had a budget
    continues with what remains of it (unless --max-steps says how far to go)."""
    budget, used = previous.time_budget_s, previous.budget_used_s or 0.0
    if cfg.time_budget or not budget or steps_given:
        return cfg, 0.0
    if used >= budget - 1.0:
        raise UsageError(
            f"checkpoint '{name}' has used its {format_duration(budget)} time budget: "
            "pass --time for a new budget or --max-steps to train on",
            field="time_budget",
        )
    return replace(cfg, time_budget=budget), used
