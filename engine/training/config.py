"""What a training run is asked to do: ``TrainConfig`` (the one place for its flags, their
defaults and their validation) and the defaults the product ships with.  Torch-free: the app's
form, the CLI's parser and the benchmark build one without loading the model stack."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

from engine.data import tokenizer as tok_mod
from engine.data.conversations import ASSISTANT_CHOICES
from engine.errors import UsageError
from engine.model import ARCHES, GPT2_ACTIVATION, GPT2_ACTIVATIONS, PRESETS, get_preset
from engine.store.checkpoints import validate_name
from engine.training.schedule import WARMDOWN_FRACTION, Duration

MAX_BLOCK = 16_384
OPTIMIZERS = ("adamw", "muon")
EVALS_PER_BUDGET = 5  # with --time and no --eval-every
# A byte-level BPE trained on the run's own text (cached per corpus).  GPT-2's 50,257 tokens
# make the LM head and the loss most of a small model's step; see bench/results/ for the sweep.
DEFAULT_TOKENIZER = "bpe:16384"
# Optimizer defaults, each measured at equal steps on WikiText-2 (README, "Defaults, by measurement"):
ADAM_BETA2 = 0.99  # learned more per step than nanoGPT's 0.95
EMBEDDING_LR_SCALE = 5.0  # the token embeddings (tied to the LM head) at 5x the rate, for a new model
UNCAPPED_STEPS = 1_000_000_000  # the Trainer's max_steps when only a time budget ends the run


FLAG_FIELDS = {"--time": "time_budget"}  # flags not spelled as their field


def flag_field(flag: str) -> str:
    """The ``TrainConfig`` field behind a flag: --max-steps -> max_steps, --time -> time_budget."""
    return FLAG_FIELDS.get(flag, flag.lstrip("-").replace("-", "_"))


@contextlib.contextmanager
def _about(field_name: str):
    """A UsageError raised inside is about ``field_name`` (unless it already names a field)."""
    try:
        yield
    except UsageError as exc:
        if exc.field is None:
            exc.field = field_name
        raise


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
                raise UsageError(f"{flag} must be a {'whole number' if kind is int else 'number'} > 0 (got {value})", field=flag_field(flag))

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
            raise UsageError("--time must be a finite duration", field="time_budget")
        if self.arch not in (None, *ARCHES):
            raise UsageError(f"unknown architecture '{self.arch}': use {' or '.join(ARCHES)}", field="arch")
        if self.assistant not in ASSISTANT_CHOICES:
            raise UsageError(f"unknown assistant speaker '{self.assistant}': use {' or '.join(ASSISTANT_CHOICES)}", field="assistant")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer '{self.optimizer}': use {' or '.join(OPTIMIZERS)}", field="optimizer")
        if self.arch and self.init:
            raise UsageError("--arch builds a new model: it cannot be combined with --init", field="arch")
        if self.block_size is not None and self.block_size < 8:
            raise UsageError(f"--block-size must be at least 8 (got {self.block_size})", field="block_size")
        if self.block_size is not None and self.block_size > MAX_BLOCK:
            raise UsageError(f"--block-size must be at most {MAX_BLOCK} (got {self.block_size})", field="block_size")
        if self.lr is not None and self.lr > 1:
            raise UsageError(f"--lr {self.lr} is far too large: use something like 1e-3", field="lr")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < 1):
            raise UsageError(f"--weight-decay must be >= 0 and < 1 (got {self.weight_decay})", field="weight_decay")
        if not (isinstance(self.adam_beta2, (int, float)) and 0 <= self.adam_beta2 < 1):
            raise UsageError(f"--adam-beta2 must be >= 0 and < 1 (got {self.adam_beta2})", field="adam_beta2")
        positive(self.embedding_lr_scale, "--embedding-lr-scale", float)
        if self.activation not in (None, *GPT2_ACTIVATIONS):
            raise UsageError(f"unknown activation '{self.activation}': use {' or '.join(GPT2_ACTIVATIONS)}", field="activation")
        if self.activation and self.init:
            raise UsageError("--activation builds a new model: it cannot be combined with --init", field="activation")
        if self.activation and (self.arch or (PRESETS[self.preset].arch if self.preset in PRESETS else None)) == "llama":
            raise UsageError("--activation is for the GPT-2 family (the Llama family uses SwiGLU)", field="activation")
        if self.warmdown is not None and not (isinstance(self.warmdown, (int, float)) and 0 <= self.warmdown <= 1):
            raise UsageError(f"--warmdown must be a fraction of the budget from 0 to 1 (got {self.warmdown})", field="warmdown")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must be >= 0 (got {self.warmup_steps})", field="warmup_steps")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise UsageError("--seed must be a whole number >= 0", field="seed")
        if self.preset not in PRESETS:
            with _about("preset"):
                get_preset(self.preset)
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"unknown device '{self.device}': use auto, cpu or cuda", field="device")
        if self.dtype not in (None, "fp32", "bf16", "fp16"):
            raise UsageError("dtype must be fp32, bf16 or fp16", field="dtype")
        with _about("tokenizer"):
            tok_mod.parse_spec(self.tokenizer_spec)
        if self.name is not None:
            with _about("name"):
                validate_name(self.name)
        if self.resume is not None:
            with _about("resume"):
                validate_name(self.resume)
            if self.name not in (None, self.resume):
                raise UsageError("--resume continues a run under its own name: leave out --name", field="name")
            if self.init:
                raise UsageError("--resume and --init cannot be combined", field="init")
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


