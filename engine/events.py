"""Typed progress events.

Jobs (training, generation) run on worker threads and hand these frozen dataclasses to a
``sink`` callable, from the worker thread.  The Textual app wraps them in messages; the
headless command line prints them.  Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (a fallback taken, a clamp)."""

    message: str


# --- training ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainStarted:
    name: str
    preset: str
    dataset: str
    tokenizer: str
    params: int
    device: str
    dtype: str
    total_steps: int  # 0 when a time budget alone ends the run
    tokens_per_step: int
    train_tokens: int
    val_tokens: int
    start_step: int = 0
    world_size: int = 1
    time_budget_s: float | None = None  # --time: training seconds for this run (what remains of it)
    arch: str = "gpt2"
    optimizer: str = "adamw"


@dataclass(frozen=True)
class TrainStep:
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_s: float
    tokens_seen: int
    elapsed_s: float
    eta_s: float  # with a time budget: the budget that remains
    epoch: float
    train_s: float | None = None  # training time so far (without evaluation, sampling, saving, pauses)
    time_budget_s: float | None = None
    grad_norm: float | None = None  # of this step's gradients, before clipping to 1.0


@dataclass(frozen=True)
class TrainEval:
    step: int
    val_loss: float
    perplexity: float
    bits_per_byte: float
    word_perplexity: float | None = None  # on word-level text (WikiText .tokens, --word-level)
    eot_rate: float | None = None  # chat models: replies to held-out openers that ended their turn (engine.evaluation.chat_scores)
    ranking_top1: float | None = None  # chat models: the true reply ranked first of 6 (chance 1/6)


@dataclass(frozen=True)
class TrainSample:
    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class CheckpointSaved:
    name: str
    step: int
    path: str


@dataclass(frozen=True)
class TrainPaused:
    step: int


@dataclass(frozen=True)
class TrainResumed:
    step: int


@dataclass(frozen=True)
class TrainFinished:
    name: str
    step: int
    train_loss: float | None
    val_loss: float | None
    bits_per_byte: float | None
    elapsed_s: float
    train_s: float | None = None  # training time, counted against a time budget
    overhead_s: float | None = None  # evaluation, sampling and saving, reported apart
    word_perplexity: float | None = None


@dataclass(frozen=True)
class TrainCancelled:
    name: str
    step: int
    saved: bool


@dataclass(frozen=True)
class TrainFailed:
    error: str
    exit_code: int = 1


TrainEvent = Union[
    Notice,
    TrainStarted,
    TrainStep,
    TrainEval,
    TrainSample,
    CheckpointSaved,
    TrainPaused,
    TrainResumed,
    TrainFinished,
    TrainCancelled,
    TrainFailed,
]

# --- generation -------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationStarted:
    prompt_tokens: int
    truncated_tokens: int
    max_new_tokens: int
    dropped_turns: int = 0  # a chat prompt's oldest turns left out to fit the window (ChatModel.fit_chat)


@dataclass(frozen=True)
class TokenChoice:
    """What the model thought of one generated token: its probability (softmax of the model's
    logits at temperature 1, before any sampling setting) and its 10 most likely tokens there."""

    token_id: int
    prob: float
    alternatives: tuple[tuple[int, float], ...]  # (token id, probability), most likely first


@dataclass(frozen=True)
class TokenGenerated:
    """A piece of reply text (one token, or several when a character spans tokens)."""

    text: str
    index: int
    elapsed_s: float
    choices: tuple[TokenChoice, ...] = ()  # with ``stream(..., details=True)``: one per token


@dataclass(frozen=True)
class GenerationFinished:
    text: str
    new_tokens: int
    stop_reason: str  # "eos" (a stop id: the end of the turn, or end of text) | "length" | "cancelled"
    time_to_first_token_s: float | None
    tokens_per_s: float | None
    elapsed_s: float
    stop_token_id: int | None = None  # with "eos": which stop id ended the reply


@dataclass(frozen=True)
class GenerationFailed:
    error: str


GenerationEvent = Union[Notice, GenerationStarted, TokenGenerated, GenerationFinished, GenerationFailed]

Event = Union[TrainEvent, GenerationEvent]
Sink = Callable[[Event], None]


@dataclass
class EventLog:
    """A sink that keeps every event (tests and scripts)."""

    events: list = field(default_factory=list)

    def __call__(self, event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]
