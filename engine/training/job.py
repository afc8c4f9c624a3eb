"""Training: ``transformers.Trainer`` on a worker thread, reporting typed events.

``TrainingJob(config, sink).start()`` runs a whole run: tokenizer, data, model, Trainer.  A
``TrainerCallback`` (``engine.training.callback``) turns the Trainer's hooks into events (step, eval,
sample, checkpoint), honours pause and cancel within one step, and publishes each Trainer save
into the checkpoint store atomically.  The Trainer brings resume, schedules, mixed precision and
multi-process data parallel (``torchrun``); rank 0 alone reports and writes the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

from engine.data import sources as data_mod
from engine.data import tokenizer as tok_mod
from engine.data.chat_format import add_chat_format, has_own_format, stop_token_ids
from engine.errors import CheckpointError, EngineError, UsageError
from engine.events import Notice, Sink, TrainCancelled, TrainFailed, TrainFinished
from engine.store.checkpoints import META_FILE, RESUME_DIR, CheckpointStore, link_or_copy
from engine.training import distributed as dist
from engine.training.config import TrainConfig
from engine.training.plan import RunPlan, Schedule, default_name, plan_run
from engine.training.schedule import TrainClock


class _Cancelled(Exception):
    pass


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class TrainingJob:
    """One training run.  ``start()`` runs it on a worker thread; ``run()`` runs it here.

    Control from any thread: ``pause()``, ``resume()``, ``cancel(save=True)``.  Each takes
    effect at the end of the current optimizer step.
    """

    SAVING = "saving"  # ``doing`` while a checkpoint is written

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
        self.plan: RunPlan | None = None  # the run, resolved (plan_run), once it starts

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
        if self.doing == self.SAVING:
            return f"could not save checkpoint '{self.name}': {reason}{where}; the previous save is intact"
        return f"{self.doing} failed: {reason}{where}"

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Cancelled()

    def _run(self):
        cfg = self.config
        if dist.several():  # join the process group first: the ranks agree on the name below
            from engine.model import pick_device

            dist.setup(pick_device(cfg.device)[0])
        self.name = cfg.resume or cfg.name or dist.agree(default_name(cfg, data_mod.uses_builtin(cfg.dataset)))
        # Hold the checkpoint's write lock for the whole run: a second process (or app) that
        # tries to write the same name gets a clear "being written by pid N" error.
        lock = self.store.lock(self.name) if self.is_main else contextlib.nullcontext()
        with lock:
            previous = None
            if cfg.resume:
                info = self.store.get(cfg.resume)
                if not info.ok:
                    raise CheckpointError(f"checkpoint '{cfg.resume}' is broken: {info.broken}")
                if not info.resumable:
                    raise UsageError(f"checkpoint '{cfg.resume}' has no training state to resume from", field="resume")
                previous = info.record
            elif self.store.exists(self.name):
                raise UsageError(f"a checkpoint named '{self.name}' exists: pass --resume {self.name} or another --name", field="name")
            self.plan = plan_run(cfg, self.name, previous)
            return self._train(self.plan)

    def _train(self, plan: RunPlan):
        import torch
        from transformers import default_data_collator

        from engine.model import count_params, pick_device, quiet_transformers

        quiet_transformers()
        notify = lambda message: self.emit(Notice(message))  # noqa: E731
        cfg, preset = plan.config, plan.preset
        started = time.time()
        ckpt_dir = self.store.path(self.name) if plan.resuming else None

        # tokenizer and data
        kind, bpe_size = tok_mod.parse_spec(plan.tokenizer_spec)
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
        schedule = plan.schedule(len(train_set), self.world_size)
        run_dir = self.store.run_dir(self.name)

        args = self._training_arguments(cfg, run_dir, schedule, device, dtype)
        resume_from = self._prepare_run_dir(run_dir, ckpt_dir, plan.start_step)
        from engine.training.callback import EventCallback, RunContext
        from engine.training.trainer import MiniTrainer
        from engine.evaluation.words import word_table

        clock = TrainClock(offset=plan.budget_offset_s)
        context = RunContext(
            plan=plan,
            schedule=schedule,
            source=source,
            tokenizer=tokenizer,
            block_size=block_size,
            params=count_params(model),
            device=device,
            dtype=dtype,
            tokens_per_step=schedule.rows_per_step * block_size,
            started=started,
            val_set=val_set,
            token_bytes=tok_mod.token_byte_lengths(tokenizer),
            sample_prompt=self._sample_prompt(source, tokenizer, packed),
            train_tokens=packed.tokens("train"),
            val_tokens=packed.tokens("validation"),
            positions=positions,
            clock=clock,
            word_table=word_table(tokenizer) if source.word_level else None,
            arch=getattr(model.config, "model_type", None) or "?",
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
            time_budget_s=plan.budget_s,
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

    def _training_arguments(self, cfg: TrainConfig, run_dir: Path, schedule: Schedule, device: str, dtype: str):
        """The Trainer's arguments: AdamW (beta2 from --adam-beta2), clipping at 1.0, a cosine schedule to 10%
        (with --time, MiniTrainer's clock schedule replaces it), a log every step (the events),
        evaluation by the callback, one kept save."""
        from transformers import TrainingArguments

        return TrainingArguments(
            output_dir=str(run_dir),
            per_device_train_batch_size=schedule.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            max_steps=schedule.total_steps,
            learning_rate=schedule.lr,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=schedule.warmup_steps,
            weight_decay=cfg.weight_decay,
            adam_beta1=0.9,
            adam_beta2=cfg.adam_beta2,
            max_grad_norm=1.0,
            eval_strategy="no",  # the callback evaluates (loss, perplexity, bits per byte)
            save_strategy="steps",
            save_steps=schedule.save_every,
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
