"""The Trainer callback of a training run: the Trainer's hooks become the engine's events.

``EventCallback`` reports each step, evaluation, sample and save as typed events, decides when
evaluations are due (every N steps, or every fifth of a time budget), ends a timed run on the
clock, honours pause and stop within one optimizer step (every process agrees, see
``engine.training.distributed``), and publishes each Trainer save into the checkpoint store atomically.
``RunContext`` is what it knows about the run, decided once by ``TrainingJob._train``.
Imported lazily (it imports transformers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from engine.training import distributed as dist
from engine.data import tokenizer as tok_mod
from engine.store.checkpoints import MODEL_FILES, RESUME_DIR, RESUME_FILES, now_iso
from engine.store.record import CheckpointRecord
from engine.events import CheckpointSaved, TrainEval, TrainPaused, TrainResumed, TrainSample, TrainStarted, TrainStep
from engine.training.config import EVALS_PER_BUDGET, UNCAPPED_STEPS
from engine.training.plan import RunPlan, Schedule

# Each evaluation of a chat run scores this many held-out openers and ranking items
# (engine.evaluation.chat_scores; `minigpt-tui eval` scores up to the split's first 500 conversations)
EVAL_EOT_REPLIES = 16
EVAL_RANKING_ITEMS = 32

if TYPE_CHECKING:
    from engine.training.schedule import TrainClock
    from engine.training.job import TrainingJob


@dataclass
class RunContext:
    """The run as decided before the Trainer starts (read by the callback, never changed): the
    plan and its schedule, and what loading the data, tokenizer and model found."""

    plan: RunPlan
    schedule: Schedule
    source: Any  # engine.data.sources.TextSource
    tokenizer: Any
    arch: str
    block_size: int
    positions: int  # the model's position limit
    params: int
    device: str
    dtype: str
    tokens_per_step: int
    train_tokens: int
    val_tokens: int
    val_set: Any  # the validation blocks evaluated during the run
    token_bytes: Any  # bytes of text per token id (bits per byte)
    word_table: Any  # engine.evaluation.words.WordTable on word-level text, else None
    sample_prompt: str
    clock: "TrainClock"
    started: float  # time.time() at the start of the run
    val_conversations: Any = None  # a chat run: the validation conversations (a 'messages' Dataset)


class EventCallback(TrainerCallback):
    """Trainer hooks -> events; pause/cancel; publish saves to the store."""

    def __init__(self, job: "TrainingJob", ctx: RunContext):
        self.job = job
        self.ctx = ctx
        self.last_loss: float | None = None
        self.last_eval = None
        self.eval_step = None
        self.saved_step = None
        self.rate = None
        self.active_s = 0.0  # training time this session, without evals and pauses
        self.session_steps = 0
        self.step_began = None
        self.time_up = False  # the time budget is spent (decided in on_optimizer_step)
        self.next_eval_s = None  # timed evaluations: the training time of the next one
        self.last_chat = None  # the last evaluation's engine.evaluation.chat_scores.ChatScores (chat runs)

    def on_train_begin(self, args, state, control, **kwargs):
        c = self.ctx
        clock, budget = c.clock, c.plan.budget_s
        clock.start()
        clock.mark()
        if c.schedule.timed_evals:
            part = budget / EVALS_PER_BUDGET
            self.next_eval_s = (math.floor(clock.offset / part) + 1) * part
        self.job.emit(
            TrainStarted(
                name=self.job.name,
                preset=c.plan.config.preset,
                dataset=c.source.name,
                tokenizer=tok_mod.describe(c.tokenizer, c.plan.tokenizer_spec),
                params=c.params,
                device=c.device,
                dtype=c.dtype,
                total_steps=state.max_steps if state.max_steps < UNCAPPED_STEPS else 0,  # 0: the budget decides
                tokens_per_step=c.tokens_per_step,
                train_tokens=c.train_tokens,
                val_tokens=c.val_tokens,
                start_step=state.global_step,
                world_size=self.job.world_size,
                time_budget_s=(budget - clock.offset) if budget else None,
                arch=c.arch,
                optimizer=c.plan.config.optimizer,
            )
        )

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_began = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        # The schedule (stepped next) and the stop decision read rank 0's training time,
        # so that every process uses the same rate and stops at the same step.  Stop when
        # another step would end further past the budget than this one ends short of it.
        clock, budget = self.ctx.clock, self.ctx.plan.budget_s
        if not budget:
            clock.mark()
            return
        now = clock.train_s()
        took = time.perf_counter() - self.step_began if self.step_began else 0.0
        if self.job.world_size > 1:
            now, took = _rank0_values(now, took)
        clock.mark(now)
        self.time_up = now + 0.5 * took >= budget

    def on_step_end(self, args, state, control, model=None, **kwargs):
        job, c = self.job, self.ctx
        clock, budget = c.clock, c.plan.budget_s
        took = time.perf_counter() - (self.step_began or time.perf_counter())
        self.active_s += took
        self.session_steps += 1
        rate = c.tokens_per_step / took if took > 0 else 0.0
        self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
        # every rank stops at the same step, and all save or none do
        stop, drop = dist.any_rank(job.stop.is_set(), job.stop.is_set() and not job.save_on_stop)
        if stop:
            job.save_on_stop = not drop
            job.stop.set()
        step = state.global_step
        time_up = self.time_up
        last = step >= state.max_steps or time_up
        if c.schedule.timed_evals:
            due = clock.marked_s >= self.next_eval_s
            while self.next_eval_s <= clock.marked_s:
                self.next_eval_s += budget / EVALS_PER_BUDGET
        else:
            due = step % c.schedule.eval_every == 0
        if time_up:
            control.should_training_stop = True
        if due or last:
            # evaluation is due (a Stop does not make one due: it saves and goes)
            if job.is_main:
                with clock.excluded():
                    self.evaluate(model, step)
            if c.schedule.timed_evals or time_up:
                control.should_save = True
        if job._pause.is_set() and not job.stop.is_set():
            with clock.excluded("pause"):
                job.emit(TrainPaused(step=step))
                while job._pause.is_set() and not job.stop.wait(0.05):
                    pass
                job.emit(TrainResumed(step=step))
        if job.stop.is_set():
            control.should_training_stop = True
            control.should_save = job.save_on_stop
        job.doing = job.SAVING if control.should_save else "training"  # the Trainer saves right after this hook
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        c = self.ctx
        self.last_loss = float(logs["loss"])
        per_step = self.active_s / max(1, self.session_steps)
        remaining = max(0, state.max_steps - state.global_step)
        eta, total = per_step * remaining, state.max_steps
        clock, budget = c.clock, c.plan.budget_s
        if budget:
            left = 0.0 if self.time_up else max(0.0, budget - clock.marked_s)
            if left < eta or total >= UNCAPPED_STEPS:
                eta = left
                total = state.global_step + (math.ceil(left / per_step) if per_step > 0 and left > 0.5 * per_step else 0)
        self.job.emit(
            TrainStep(
                step=state.global_step,
                total_steps=total,
                loss=self.last_loss,
                lr=float(logs.get("learning_rate", 0.0)),
                tokens_per_s=self.rate or 0.0,
                tokens_seen=state.global_step * c.tokens_per_step,
                elapsed_s=time.time() - c.started,
                eta_s=eta,
                epoch=float(state.epoch or 0.0),
                train_s=clock.marked_s,
                time_budget_s=budget,
                grad_norm=_finite_or_none(logs.get("grad_norm")),
            )
        )

    def evaluate(self, model, step: int) -> None:
        from engine.evaluation.perplexity import evaluate
        from engine.generation.chat_model import ChatModel
        from engine.store.settings import Sampling

        c = self.ctx
        result = evaluate(model, c.val_set, c.token_bytes, c.device, c.dtype, stop=None, word_table=c.word_table)
        was_training = model.training
        model.eval()
        try:
            chat = ChatModel(model=model, tokenizer=c.tokenizer, name=self.job.name, device=c.device, dtype=c.dtype)
            if c.val_conversations is not None:
                from engine.evaluation.chat_scores import chat_scores

                held = c.val_conversations
                conversations = list(held.select(range(min(len(held), 2 * EVAL_RANKING_ITEMS)))["messages"])
                self.last_chat = chat_scores(chat, conversations, EVAL_EOT_REPLIES, EVAL_RANKING_ITEMS)
            text = chat.generate_text(
                c.sample_prompt,
                Sampling(temperature=0.8, top_k=40, top_p=1.0, repetition_penalty=1.0, max_new_tokens=c.plan.config.sample_tokens, seed=0),
            )
        finally:
            model.train(was_training)
        if result is not None:
            self.last_eval, self.eval_step = result, step
            scores = self.last_chat
            self.job.emit(
                TrainEval(
                    step=step,
                    val_loss=result.loss,
                    perplexity=result.perplexity,
                    bits_per_byte=result.bits_per_byte,
                    word_perplexity=result.word_perplexity,
                    eot_rate=scores.eot_rate if scores else None,
                    ranking_top1=scores.ranking_top1 if scores else None,
                )
            )
        self.job.emit(TrainSample(step=step, prompt=c.sample_prompt, text=text))

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        job, c = self.job, self.ctx
        src = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        files = {}
        for f in src.iterdir():
            if not f.is_file():
                continue
            if f.name in MODEL_FILES:
                files[f.name] = f
            elif f.name in RESUME_FILES or (f.name.startswith("rng_state") and f.suffix == ".pth"):
                files[f"{RESUME_DIR}/{f.name}"] = f
        with c.clock.excluded():
            meta = self.record(state).to_json()
            path = job.store.publish(job.name, files, meta, write_extra=lambda d: c.tokenizer.save_pretrained(str(d)))
        job.doing = "training"
        self.saved_step = state.global_step
        job.emit(CheckpointSaved(name=job.name, step=state.global_step, path=str(path)))

    def record(self, state) -> CheckpointRecord:
        """What this save's ``minigpt.json`` says: the plan, what loading found, the last
        evaluation (or the resumed run's, before this run's first) and the time spent."""
        c, plan, cfg = self.ctx, self.ctx.plan, self.ctx.plan.config
        prev = plan.previous or CheckpointRecord()
        ev, chat = self.last_eval, self.last_chat
        clock, budget = c.clock, plan.budget_s
        capped = c.schedule.capped  # (the Trainer's max_steps is the schedule's total_steps)
        return CheckpointRecord(
            name=self.job.name,
            preset=cfg.preset,
            arch=c.arch,
            params=c.params,
            vocab_size=len(c.tokenizer),
            n_positions=c.positions,
            block_size=c.block_size,
            init=cfg.init or prev.init,
            parent=prev.parent or cfg.init,
            chat=bool(getattr(c.tokenizer, "chat_template", None)),
            dataset=c.source.name,
            dataset_spec=c.source.spec,
            dataset_config=c.source.config,
            assistant=cfg.assistant if c.val_conversations is not None else None,
            word_level=c.word_table is not None,
            tokenizer=tok_mod.describe(c.tokenizer, plan.tokenizer_spec),
            tokenizer_spec=plan.tokenizer_spec,
            steps=state.global_step,
            planned_steps=state.max_steps if capped else None,
            tokens_seen=state.global_step * c.tokens_per_step,
            complete=(capped and state.global_step >= state.max_steps) or self.time_up,
            time_budget_s=budget,
            budget_used_s=round(clock.marked_s, 2) if budget else None,
            train_time_s=round((prev.train_time_s or 0.0) + clock.marked_s - clock.offset, 2),
            overhead_s=round((prev.overhead_s or 0.0) + clock.overhead_s, 2),
            wall_time_s=round((prev.wall_time_s or 0.0) + (time.time() - c.started), 2),
            train_loss=self.last_loss,
            val_loss=ev.loss if ev else prev.val_loss,
            perplexity=ev.perplexity if ev else prev.perplexity,
            bits_per_byte=ev.bits_per_byte if ev else prev.bits_per_byte,
            word_perplexity=ev.word_perplexity if ev else prev.word_perplexity,
            eot_rate=chat.eot_rate if chat else prev.eot_rate,
            ranking_top1=chat.ranking_top1 if chat else prev.ranking_top1,
            eval_step=self.eval_step if ev else prev.eval_step,
            device=c.device,
            dtype=c.dtype,
            lr=c.schedule.lr,
            batch_size=c.schedule.batch_size,
            seed=cfg.seed,
            optimizer=cfg.optimizer,
            warmdown=cfg.warmdown,  # None: the default
            weight_decay=cfg.weight_decay,
            adam_beta2=cfg.adam_beta2,
            embedding_lr_scale=cfg.embedding_lr_scale,
            created=prev.created or datetime.fromtimestamp(c.started, timezone.utc).isoformat(timespec="seconds"),
            updated=now_iso(),
            extra=prev.extra,
        )


def _finite_or_none(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _rank0_values(*values: float) -> tuple[float, ...]:
    """Rank 0's ``values`` on every process (multi-process runs)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return tuple(float(x) for x in t.tolist())
