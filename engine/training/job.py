"""Training: ``transformers.Trainer`` on a worker thread, reporting typed events.

``TrainingJob(config, sink).start()`` runs a whole run: tokenizer, data, model, Trainer.  A
``TrainerCallback`` (``engine.training.callback``) turns the Trainer's hooks into events (step, eval,
sample, checkpoint), honours pause and cancel within one step, and publishes each Trainer save
into the checkpoint store atomically.  The Trainer brings resume, schedules, mixed precision and
multi-process data parallel (``torchrun``); rank 0 alone reports and writes the store.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from engine.data import sources as data_mod
from engine.training import distributed as dist
from engine.data import tokenizer as tok_mod
from engine.data.chat_format import add_chat_format, has_own_format, stop_token_ids
from engine.data.conversations import ASSISTANT_CHOICES
from engine.store.checkpoints import META_FILE, RESUME_DIR, CheckpointStore, link_or_copy, validate_name
from engine.errors import CheckpointError, EngineError, UsageError
from engine.events import Notice, Sink, TrainCancelled, TrainFailed, TrainFinished
from engine.model import ARCHES, GPT2_ACTIVATION, GPT2_ACTIVATIONS, PRESETS, get_preset
from engine.training.schedule import WARMDOWN_FRACTION, Duration, TrainClock, format_duration

MODEL_FILES = ("model.safetensors", "config.json", "generation_config.json")
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json")  # + rng_state*.pth
MAX_BLOCK = 16_384
SAVING = "saving"  # TrainingJob.doing while a checkpoint is written
OPTIMIZERS = ("adamw", "muon")
EVALS_PER_BUDGET = 5  # with --time and no --eval-every
# A byte-level BPE trained on the run's own text (cached per corpus).  GPT-2's 50,257 tokens
# make the LM head and the loss most of a small model's step; see bench/results/ for the sweep.
DEFAULT_TOKENIZER = "bpe:16384"
# Optimizer defaults, each measured at equal steps on WikiText-2 (README, "Defaults, by measurement"):
ADAM_BETA2 = 0.99  # learned more per step than nanoGPT's 0.95
EMBEDDING_LR_SCALE = 5.0  # the token embeddings (tied to the LM head) at 5x the rate, for a new model
UNCAPPED_STEPS = 1_000_000_000  # the Trainer's max_steps when only a time budget ends the run


def option(default, help: str, **argparse_kwargs):
    """A ``TrainConfig`` field and its ``minigpt-tui train`` flag: transformers' ``HfArgumentParser``
    makes ``--field_name`` / ``--field-name`` from the field, with this help and these argparse
    arguments (``aliases``, ``choices``, ``metavar``)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class TrainConfig:
    """What a training run is asked to do: the one place for its flags, their defaults and
    (``check``) their validation.  The CLI, the app's form and the benchmark all build one."""

    dataset: str | None = option(
        None, "hub id (default wikitext), a file or folder, 'builtin' (the Bible) or 'chitchat' (conversations)", metavar="SPEC"
    )
    dataset_config: str | None = option(None, "hub dataset config (default wikitext-2-raw-v1 for wikitext)", metavar="NAME")
    tokenizer: str | None = option(
        None, f"gpt2 | bpe:N | PATH (default: {DEFAULT_TOKENIZER} trained on the data; with --init, that model's own)",
        metavar="SPEC",
    )
    preset: str = option("seed", "model size (default seed)", choices=list(PRESETS))
    init: str | None = option(None, "start from a pretrained causal LM (hub id or folder): fine-tuning", metavar="MODEL")
    block_size: int | None = option(None, "tokens per training row (default: the preset's)", metavar="N")
    batch_size: int | None = option(None, "rows per optimizer step (default: the preset's)", metavar="N")
    epochs: float | None = option(None, "passes over the training text (default 1, unless --time or --max-steps)", metavar="N")
    max_steps: int | None = option(None, "stop after this many optimizer steps", metavar="N")
    lr: float | None = option(None, "peak learning rate (default: the preset's)", metavar="X")
    eval_every: int | None = option(None, "evaluate every N steps (default: 5 times per --time budget)", metavar="N")
    save_every: int | None = option(None, "save every N steps (default: at each evaluation)", metavar="N")
    name: str | None = option(None, "checkpoint name (default: preset, data and date)")
    resume: str | None = option(None, "continue a saved run with its optimizer state", metavar="NAME")
    device: str = option("auto", "where to train (default auto: CUDA when there is one)", choices=["auto", "cpu", "cuda"])
    seed: int = option(1337, "seeds the initial weights and the data order (default 1337)", metavar="N")
    warmup_steps: int | None = option(None, "without --time: steps of linear warmup (default 5%% of the steps, at most 200)", metavar="N")
    weight_decay: float = option(0.1, "AdamW's decoupled weight decay of matrices and embeddings (default 0.1)", metavar="X")
    adam_beta2: float = option(
        ADAM_BETA2, f"AdamW's decay of its squared-gradient average (default {ADAM_BETA2})", metavar="X"
    )
    embedding_lr_scale: float | None = option(
        None,
        f"the token embeddings' rate as a multiple of --lr (default {EMBEDDING_LR_SCALE:g} for a new model, 1 with --init; "
        "a resumed run keeps its own)",
        metavar="X",
    )
    activation: str | None = option(
        None, f"a new GPT-2-family model's MLP activation (default {GPT2_ACTIVATION}: squared ReLU)", choices=list(GPT2_ACTIVATIONS)
    )
    warmdown: float | None = option(
        None,
        f"with --time: the rate decays to 0 over this last fraction of the budget (default {WARMDOWN_FRACTION}; "
        "a resumed run keeps its own)",
        metavar="FRACTION",
    )
    grad_accum: int = option(1, "batches per optimizer step (default 1)", metavar="N")
    eval_blocks: int = option(256, "validation blocks per evaluation (default 256)", metavar="N")
    sample_tokens: int = option(48, "tokens of the sample shown at each evaluation (default 48)", metavar="N")
    dtype: str | None = option(
        None, "precision (default: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32)", choices=["fp32", "bf16", "fp16"]
    )
    time_budget: Duration | None = option(
        None,
        "train for this long (90s, 30m, 2h): the rate warms up, holds and decays on the clock; "
        "evaluation and saving are not counted",
        aliases=["--time"],
        metavar="DURATION",
    )
    arch: str | None = option(None, "model family at the preset's shape (default: the preset's)", choices=list(ARCHES))
    optimizer: str = option("adamw", "adamw, or muon: Muon for hidden matrices + AdamW for the rest", choices=list(OPTIMIZERS))
    word_level: bool = option(False, "the text is word-level (like WikiText's .tokens): also report word perplexity")
    assistant: str = option(
        "both",
        "in a human-human corpus (chitchat): 'both' trains each chat twice, each speaker once the assistant "
        "(default; README, 'Chat models'), or 'second': the second speaker only",
        choices=list(ASSISTANT_CHOICES),
    )

    def check(self) -> "TrainConfig":
        """Raise UsageError for values out of range (before anything is loaded or written)."""
        def positive(value, flag, kind=int):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0 or (kind is int and value != int(value))):
                raise UsageError(f"{flag} must be a {'whole number' if kind is int else 'number'} > 0 (got {value})")

        positive(self.block_size, "--block-size")
        positive(self.batch_size, "--batch-size")
        positive(self.max_steps, "--max-steps")
        positive(self.epochs, "--epochs", float)
        positive(self.lr, "--lr", float)
        positive(self.eval_every, "--eval-every")
        positive(self.save_every, "--save-every")
        positive(self.grad_accum, "--grad-accum")
        positive(self.eval_blocks, "--eval-blocks")
        positive(self.sample_tokens, "--sample-tokens")
        positive(self.time_budget, "--time", float)
        if self.time_budget is not None and not math.isfinite(self.time_budget):
            raise UsageError("--time must be a finite duration")
        if self.arch not in (None, *ARCHES):
            raise UsageError(f"unknown architecture '{self.arch}': use {' or '.join(ARCHES)}")
        if self.assistant not in ASSISTANT_CHOICES:
            raise UsageError(f"unknown assistant speaker '{self.assistant}': use {' or '.join(ASSISTANT_CHOICES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer '{self.optimizer}': use {' or '.join(OPTIMIZERS)}")
        if self.arch and self.init:
            raise UsageError("--arch builds a new model: it cannot be combined with --init")
        if self.block_size is not None and self.block_size < 8:
            raise UsageError(f"--block-size must be at least 8 (got {self.block_size})")
        if self.block_size is not None and self.block_size > MAX_BLOCK:
            raise UsageError(f"--block-size must be at most {MAX_BLOCK} (got {self.block_size})")
        if self.lr is not None and self.lr > 1:
            raise UsageError(f"--lr {self.lr} is far too large: use something like 1e-3")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < 1):
            raise UsageError(f"--weight-decay must be >= 0 and < 1 (got {self.weight_decay})")
        if not (isinstance(self.adam_beta2, (int, float)) and 0 <= self.adam_beta2 < 1):
            raise UsageError(f"--adam-beta2 must be >= 0 and < 1 (got {self.adam_beta2})")
        positive(self.embedding_lr_scale, "--embedding-lr-scale", float)
        if self.activation not in (None, *GPT2_ACTIVATIONS):
            raise UsageError(f"unknown activation '{self.activation}': use {' or '.join(GPT2_ACTIVATIONS)}")
        if self.activation and self.init:
            raise UsageError("--activation builds a new model: it cannot be combined with --init")
        if self.activation and (self.arch or (PRESETS[self.preset].arch if self.preset in PRESETS else None)) == "llama":
            raise UsageError("--activation is for the GPT-2 family (the Llama family uses SwiGLU)")
        if self.warmdown is not None and not (isinstance(self.warmdown, (int, float)) and 0 <= self.warmdown <= 1):
            raise UsageError(f"--warmdown must be a fraction of the budget from 0 to 1 (got {self.warmdown})")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must be >= 0 (got {self.warmup_steps})")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise UsageError("--seed must be a whole number >= 0")
        if self.preset not in PRESETS:
            get_preset(self.preset)
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"unknown device '{self.device}': use auto, cpu or cuda")
        if self.dtype not in (None, "fp32", "bf16", "fp16"):
            raise UsageError("dtype must be fp32, bf16 or fp16")
        tok_mod.parse_spec(self.tokenizer_spec)
        if self.name is not None:
            validate_name(self.name)
        if self.resume is not None:
            validate_name(self.resume)
            if self.name not in (None, self.resume):
                raise UsageError("--resume continues a run under its own name: leave out --name")
            if self.init:
                raise UsageError("--resume and --init cannot be combined")
        return self

    @property
    def tokenizer_spec(self) -> str:
        """The tokenizer this run asks for: the flag, else the --init model's own, else the default."""
        return self.tokenizer or ("gpt2" if self.init else DEFAULT_TOKENIZER)


# The first-run button's budget: minutes of training (tokenizer, data and saving come on top).
FIRST_RUN_BUDGET_S = {"cpu": 180.0, "cuda": 60.0}
# ... and its data: conversations, so that the model a new user meets can take turns (README, "Chat
# models": conversations only, from scratch, beat a base run then chat tuning at this budget).
FIRST_RUN_DATASET = "chitchat"


def first_run_config(preset: str = "seed", device: str | None = None) -> TrainConfig:
    """The model a new user gets from one key: a chat model, the defaults on the offline chitchat
    conversations, for a short time budget, 3 minutes on a CPU and 1 on a GPU.
    Without ``device`` this asks torch which one there is (call it off the UI thread)."""
    if device is None:
        from engine.model import pick_device

        device = pick_device("auto")[0]
    return TrainConfig(preset=preset, dataset=FIRST_RUN_DATASET, time_budget=FIRST_RUN_BUDGET_S.get(device, FIRST_RUN_BUDGET_S["cpu"]))


class _Cancelled(Exception):
    pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class TrainingJob:
    """One training run.  ``start()`` runs it on a worker thread; ``run()`` runs it here.

    Control from any thread: ``pause()``, ``resume()``, ``cancel(save=True)``.  Each takes
    effect at the end of the current optimizer step.
    """

    def __init__(self, config: TrainConfig, sink: Sink | None = None, store: CheckpointStore | None = None):
        self.config = config
        self.store = store or CheckpointStore()
        rank, self.world_size = _rank()
        self.is_main = rank == 0
        self._sink = sink if (sink and self.is_main) else (lambda event: None)
        self.stop = threading.Event()
        self.save_on_stop = True
        self._pause = threading.Event()
        self.thread: threading.Thread | None = None
        self.result = None
        self.name: str | None = None
        self.doing = "preparing the run"  # what the run is doing now, for error messages

    # --- control ---
    def start(self) -> "TrainingJob":
        self.thread = threading.Thread(target=self.run, name="minigpt-train", daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float | None = None):
        if self.thread:
            self.thread.join(timeout)
        return self.result

    def cancel(self, save: bool = True) -> None:
        self.save_on_stop = save
        self.stop.set()
        self._pause.clear()

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def emit(self, event) -> None:
        self._sink(event)

    # --- the run ---
    def run(self):
        try:
            self.config.check()
            self.result = self._run()
        except _Cancelled:
            self.result = TrainCancelled(name=self.name or "", step=0, saved=False)
        except EngineError as exc:
            self.result = TrainFailed(error=str(exc), exit_code=exc.exit_code)
        except OSError as exc:
            files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
            self.result = TrainFailed(error=self._os_error_message(exc.strerror or " ".join(str(exc).split()), files))
        except Exception as exc:  # a bug or a library failure: still one line for the user
            text = " ".join(str(exc).split())
            if "No space left" in text or "os error 28" in text:  # safetensors' writer raises its own type
                self.result = TrainFailed(error=self._os_error_message("No space left on device", None))
            else:
                self.result = TrainFailed(error=f"{self.doing} failed: {type(exc).__name__}: {text}")
        self.emit(self.result)
        return self.result

    def _os_error_message(self, reason: str, filename) -> str:
        """One line saying what failed: a checkpoint save (the previous one is intact), or the
        step that was under way (reading the dataset, loading the tokenizer, writing the cache)."""
        where = f" ({filename})" if filename else ""
        if self.doing == SAVING:
            return f"could not save checkpoint '{self.name}': {reason}{where}; the previous save is intact"
        return f"{self.doing} failed: {reason}{where}"

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Cancelled()

    def _run(self):
        cfg = self.config
        notify = lambda message: self.emit(Notice(message))  # noqa: E731
        if dist.several():  # join the process group first: the ranks agree on the name below
            from engine.model import pick_device

            dist.setup(pick_device(cfg.device)[0])
        self.name = cfg.resume or cfg.name or dist.agree(self._default_name(cfg))
        # Hold the checkpoint's write lock for the whole run: a second process (or app) that
        # tries to write the same name gets a clear "being written by pid N" error.
        lock = self.store.lock(self.name) if self.is_main else contextlib.nullcontext()
        with lock:
            previous: dict = {}
            if cfg.resume:
                info = self.store.get(cfg.resume)
                if not info.ok:
                    raise CheckpointError(f"checkpoint '{cfg.resume}' is broken: {info.broken}")
                if not info.resumable:
                    raise UsageError(f"checkpoint '{cfg.resume}' has no training state to resume from")
                previous = info.meta
                steps_given = cfg.max_steps is not None
                cfg = replace(
                    cfg,
                    dataset=previous.get("dataset_spec") or cfg.dataset,
                    dataset_config=previous.get("dataset_config"),
                    preset=previous.get("preset") or cfg.preset,
                    block_size=previous.get("block_size") or cfg.block_size,
                    batch_size=cfg.batch_size or previous.get("batch_size"),
                    lr=cfg.lr or previous.get("lr"),
                    # a new --time replaces the old plan's step count; --max-steps sets one
                    max_steps=cfg.max_steps or (None if cfg.time_budget else previous.get("planned_steps")),
                    optimizer=self._resumed_optimizer(cfg, previous),
                    warmdown=cfg.warmdown if cfg.warmdown is not None else previous.get("warmdown"),
                    embedding_lr_scale=self._resumed_embedding_lr_scale(cfg, previous),
                    word_level=cfg.word_level or bool(previous.get("word_level")),
                    assistant=previous.get("assistant") or cfg.assistant,
                )
                cfg = self._resumed_budget(cfg, previous, steps_given)
            elif self.store.exists(self.name):
                raise UsageError(f"a checkpoint named '{self.name}' exists: pass --resume {self.name} or another --name")
            return self._train(cfg, get_preset(cfg.preset), previous, notify)

    @staticmethod
    def _resumed_embedding_lr_scale(cfg: TrainConfig, previous: dict) -> float:
        """The run's own (its optimizer state has the rate groups it was made with)."""
        saved = float(previous.get("embedding_lr_scale") or 1.0)
        if cfg.embedding_lr_scale is not None and cfg.embedding_lr_scale != saved:
            raise UsageError(f"--resume continues with the run's own --embedding-lr-scale ({saved:g}): leave it out")
        return saved

    _budget_offset = 0.0  # training seconds already spent on the budget a resumed run continues

    @staticmethod
    def _resumed_optimizer(cfg: TrainConfig, previous: dict) -> str:
        saved = previous.get("optimizer") or "adamw"
        if cfg.optimizer not in ("adamw", saved):
            raise UsageError(f"--resume continues with the run's own optimizer ({saved}): leave out --optimizer")
        return saved

    def _resumed_budget(self, cfg: TrainConfig, previous: dict, steps_given: bool) -> TrainConfig:
        """--resume: a new --time starts a new budget; without one, a run that had a budget
        continues with what remains of it (unless --max-steps says how far to go)."""
        budget = previous.get("time_budget_s")
        used = float(previous.get("budget_used_s") or 0.0)
        if cfg.time_budget or not budget or steps_given:
            return cfg
        if used >= budget - 1.0:
            raise UsageError(
                f"checkpoint '{self.name}' has used its {format_duration(budget)} time budget: "
                "pass --time for a new budget or --max-steps to train on"
            )
        self._budget_offset = used
        return replace(cfg, time_budget=budget)

    @staticmethod
    def _default_name(cfg: TrainConfig) -> str:
        """PRESET-DATA-TIME, after the data the run will really read: without --dataset that is
        WikiText-2, or the built-in corpus when the hub cannot be reached (data.resolve)."""
        stem = "builtin" if data_mod.uses_builtin(cfg.dataset) else Path(cfg.dataset or "wikitext").name.split(".")[0] or "data"
        stem = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in stem)[:40].strip("-.") or "data"
        return f"{cfg.preset}-{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def _train(self, cfg: TrainConfig, preset, previous: dict, notify):
        import torch
        from transformers import default_data_collator

        from engine.model import count_params, pick_device, quiet_transformers

        quiet_transformers()
        started = time.time()
        ckpt_dir = self.store.path(self.name) if cfg.resume else None
        if cfg.embedding_lr_scale is None:
            cfg = replace(cfg, embedding_lr_scale=1.0 if cfg.init else EMBEDDING_LR_SCALE)

        # tokenizer and data
        kind, bpe_size = tok_mod.parse_spec(cfg.tokenizer_spec)
        self.doing = "reading the dataset"
        source = data_mod.resolve(cfg.dataset, cfg.dataset_config, notify, cfg.assistant)
        if cfg.word_level:
            source.word_level = True
        self._check_stop()
        self.doing = "loading the tokenizer"
        with dist.main_first():  # the main process builds cached tokenizers; the others load them
            tokenizer = self._load_tokenizer(cfg, kind, bpe_size, source, ckpt_dir, notify)
        grew = source.chat and add_chat_format(tokenizer)  # a tokenizer without a template gets ours
        self._check_stop()

        model, positions, block_size = self._load_model(cfg, preset, tokenizer, ckpt_dir, grow=grew)
        if has_own_format(tokenizer):  # replies end at the end of the turn: saved in generation_config.json
            model.generation_config.eos_token_id = stop_token_ids(tokenizer)
            model.generation_config.pad_token_id = tokenizer.eos_token_id

        self.doing = "tokenizing the dataset (into the cache)"
        with dist.main_first():  # the main process writes the packed cache; the others read it
            packed = data_mod.pack(source, tokenizer, block_size, notify)
        self._check_stop()
        self.doing = "preparing the run"
        train_set = packed.blocks("train")
        val_set = packed.blocks("validation", limit=cfg.eval_blocks)

        device, dtype = pick_device(cfg.device)
        dtype = cfg.dtype or dtype
        batch = cfg.batch_size or preset.batch_size
        per_step = batch * cfg.grad_accum * self.world_size
        steps_per_epoch = max(1, math.ceil(len(train_set) / per_step))
        budget = cfg.time_budget
        if cfg.max_steps:
            total = cfg.max_steps
        elif budget and not cfg.epochs:
            total = UNCAPPED_STEPS  # the budget ends the run
        else:
            total = max(1, math.ceil((cfg.epochs or 1.0) * steps_per_epoch))
        start_step = int(previous.get("steps", 0))
        if cfg.resume and total <= start_step:
            raise UsageError(
                f"checkpoint '{self.name}' is already at step {start_step}: pass --max-steps above that to train on"
            )
        # with a time budget and no --eval-every: evaluate (and save) every fifth of the budget
        timed_evals = bool(budget) and not cfg.eval_every
        eval_every = cfg.eval_every or (UNCAPPED_STEPS if timed_evals else min(1000, max(10, total // 10)))
        save_every = cfg.save_every or eval_every
        lr = cfg.lr or preset.lr
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(200, total // 20)
        run_dir = self.store.run_dir(self.name)

        args = self._training_arguments(cfg, run_dir, batch, total, lr, warmup, save_every, device, dtype)
        resume_from = self._prepare_run_dir(run_dir, ckpt_dir, start_step)
        from engine.training.callback import EventCallback, RunContext
        from engine.training.trainer import MiniTrainer
        from engine.evaluation.words import word_table

        clock = TrainClock(offset=self._budget_offset)
        context = RunContext(
            source=source,
            tokenizer=tokenizer,
            tokenizer_spec=previous.get("tokenizer_spec") or cfg.tokenizer_spec,
            preset=preset.name,
            cfg=cfg,
            block_size=block_size,
            params=count_params(model),
            device=device,
            dtype=dtype,
            tokens_per_step=per_step * block_size,
            previous=previous,
            started=started,
            val_set=val_set,
            token_bytes=tok_mod.token_byte_lengths(tokenizer),
            eval_every=eval_every,
            sample_prompt=self._sample_prompt(source, tokenizer, packed),
            train_tokens=packed.tokens("train"),
            val_tokens=packed.tokens("validation"),
            lr=lr,
            batch=batch,
            positions=positions,
            clock=clock,
            budget=budget,
            timed_evals=timed_evals,
            word_table=word_table(tokenizer) if source.word_level else None,
            arch=getattr(model.config, "model_type", None) or "?",
            optimizer=cfg.optimizer,
            val_conversations=source.splits.get("validation") if source.chat else None,
        )
        callback = EventCallback(self, context)
        trainer = MiniTrainer(
            model=model,
            args=args,
            train_dataset=train_set,
            data_collator=default_data_collator,
            callbacks=[callback],
            clock=clock,
            time_budget_s=budget,
            warmdown=cfg.warmdown,
            optimizer_name=cfg.optimizer,
            embedding_lr_scale=cfg.embedding_lr_scale,
            device=device,
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)  # events replace the Trainer's own printing
        trainer.remove_callback(ProgressCallback)
        torch.manual_seed(cfg.seed)
        self.doing = "training"
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except BaseException:
            # a failed run (a save that ran out of space, a crash in a step) takes its work folder
            # with it: the staged resume state and the half-made save would otherwise hold disk
            # space (on a full disk, of all places) until the next listing tidies the store
            if self.is_main:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        step = trainer.state.global_step
        dist.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(run_dir, ignore_errors=True)
        if self.stop.is_set():
            return TrainCancelled(name=self.name, step=step, saved=callback.saved_step == step)
        last = callback.last_eval
        return TrainFinished(
            name=self.name,
            step=step,
            train_loss=callback.last_loss,
            val_loss=last.loss if last else None,
            bits_per_byte=last.bits_per_byte if last else None,
            elapsed_s=time.time() - started,
            train_s=clock.marked_s - clock.offset,
            overhead_s=clock.overhead_s,
            word_perplexity=last.word_perplexity if last else None,
        )

    @staticmethod
    def _sample_prompt(source, tokenizer, packed) -> str:
        """What each evaluation's sample continues: the start of the validation text, or (a chat
        model) the first validation conversation's opening turn, rendered for a reply."""
        if not source.chat:
            return tokenizer.decode(packed.splits["validation"][:8].tolist())
        from engine.evaluation.chat_scores import opener

        first = source.splits["validation"][0]["messages"]
        return tokenizer.apply_chat_template(opener(first), add_generation_prompt=True, tokenize=False)

    def _load_model(self, cfg: TrainConfig, preset, tokenizer, ckpt_dir, grow: bool = False):
        """The model to train (resumed, --init, or new at the preset's shape; --seed fixes its
        initial weights), its position limit and the block size.  ``grow``: the tokenizer gained
        the turn tokens, and the pretrained model's embeddings grow to match."""
        from transformers import set_seed

        from engine.store.checkpoints import load_model_dir
        from engine.model import build_model, load_pretrained, n_positions

        self.doing = "loading the model"
        set_seed(cfg.seed)
        if ckpt_dir is not None:
            model, _ = load_model_dir(ckpt_dir)
            model.train()
        elif cfg.init:
            model = load_pretrained(cfg.init)
        else:
            model = build_model(
                preset, len(tokenizer), cfg.block_size or preset.block_size, tokenizer.eos_token_id, cfg.arch, cfg.activation
            )
        positions = n_positions(model)
        block_size = cfg.block_size or min(preset.block_size, positions)
        if block_size > positions:
            raise UsageError(f"--block-size {block_size} is above the model's {positions} positions")
        if grow and len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            raise UsageError(f"the tokenizer ({len(tokenizer)} tokens) does not fit the model's vocabulary")
        return model, positions, block_size

    def _training_arguments(self, cfg: TrainConfig, run_dir: Path, batch: int, total: int, lr: float, warmup: int,
                            save_every: int, device: str, dtype: str):
        """The Trainer's arguments: AdamW (beta2 from --adam-beta2), clipping at 1.0, a cosine schedule to 10%
        (with --time, MiniTrainer's clock schedule replaces it), a log every step (the events),
        evaluation by the callback, one kept save."""
        from transformers import TrainingArguments

        return TrainingArguments(
            output_dir=str(run_dir),
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=cfg.grad_accum,
            max_steps=total,
            learning_rate=lr,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=warmup,
            weight_decay=cfg.weight_decay,
            adam_beta1=0.9,
            adam_beta2=cfg.adam_beta2,
            max_grad_norm=1.0,
            eval_strategy="no",  # the callback evaluates (loss, perplexity, bits per byte)
            save_strategy="steps",
            save_steps=save_every,
            save_total_limit=1,
            logging_strategy="steps",
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            seed=cfg.seed,
            bf16=dtype == "bf16",
            fp16=dtype == "fp16",  # the Trainer adds the gradient scaler
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            dataloader_pin_memory=device == "cuda",
            remove_unused_columns=False,
            ddp_backend=("gloo" if device == "cpu" else "nccl") if self.world_size > 1 else None,
            ddp_find_unused_parameters=False,
        )

    def _load_tokenizer(self, cfg: TrainConfig, kind: str, bpe_size, source, ckpt_dir, notify):
        if ckpt_dir is not None:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(ckpt_dir), local_files_only=True)
        if kind == "bpe":
            texts = lambda: (t for batch in source.iter_text("train") for t in batch)  # noqa: E731
            return tok_mod.train_bpe(texts, bpe_size, source.key, notify, chat=source.chat)
        if kind == "path":
            return tok_mod.load_from(cfg.tokenizer)
        if cfg.init:
            return tok_mod.load_from(cfg.init)
        return tok_mod.load_gpt2(notify)

    def _prepare_run_dir(self, run_dir: Path, ckpt_dir: Path | None, step: int) -> str | None:
        """A clean Trainer output folder, with the checkpoint to resume from staged in it.  The
        main process alone writes it; the other ranks wait, then read the same staged folder."""
        self.doing = f"staging checkpoint '{self.name}' to resume from" if ckpt_dir is not None else "preparing the run folder"
        with dist.main_first():
            if self.is_main:
                shutil.rmtree(run_dir, ignore_errors=True)
                run_dir.mkdir(parents=True, exist_ok=True)
                if ckpt_dir is not None:
                    self._stage_resume(ckpt_dir, run_dir, step)
        self.doing = "preparing the run"
        return str(run_dir / f"checkpoint-{step}") if ckpt_dir is not None else None

    def _stage_resume(self, ckpt_dir: Path, run_dir: Path, step: int) -> str:
        """Lay a published checkpoint out as the Trainer's ``checkpoint-N`` folder."""
        staged = run_dir / f"checkpoint-{step}"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for f in ckpt_dir.iterdir():
            if f.is_file() and f.name != META_FILE:
                link_or_copy(f, staged / f.name)
        for f in (ckpt_dir / RESUME_DIR).iterdir():
            if f.is_file():
                shutil.copyfile(f, staged / f.name)
        return str(staged)
