"""The engine side: ``TrainingJob`` on the seed preset, and ``ChatModel.stream``."""

from __future__ import annotations

import time

from engine.events import TrainEval, TrainStarted, TrainStep

# The product's default tokenizer (engine.training.config.DEFAULT_TOKENIZER, chosen by the sweep): a BPE
# trained on the data.  Far fewer tokens than GPT-2's 50,257 cut the LM head and cross-entropy
# (most of a seed step); bits per byte keeps quality comparable across tokenizers.
from engine.training.config import DEFAULT_TOKENIZER as TOKENIZER  # noqa: E402


class Recorder:
    """A sink that times steps and evals from the train begin."""

    def __init__(self):
        self.begin = None
        self.step_ends: list[float] = []
        self.evals: list[dict] = []
        self.started: TrainStarted | None = None
        self.events = []

    def __call__(self, event):
        now = time.perf_counter()
        if isinstance(event, TrainStarted):
            self.begin = now
            self.started = event
        elif isinstance(event, TrainStep):
            self.step_ends.append(now)
        elif isinstance(event, TrainEval):
            self.evals.append(
                {"step": event.step, "t_s": now - (self.begin or now), "val_loss": event.val_loss, "bpb": event.bits_per_byte}
            )
        self.events.append(type(event).__name__)


def train(data: str, name: str, *, max_steps: int, eval_every: int, eval_blocks: int, budget_s: float | None = None,
          tokenizer: str = TOKENIZER, batch_size: int | None = None, sample_tokens: int = 8, preset: str = "seed",
          device: str = "auto"):
    from engine.training.config import TrainConfig
    from engine.training.job import TrainingJob

    # ``budget_s`` is the product's --time: training time (the bench's own evaluations excluded,
    # as the engine excludes them), ending with the rate decayed; the run ends itself
    rec = Recorder()
    cfg = TrainConfig(
        dataset=data,
        preset=preset,
        device=device,
        tokenizer=tokenizer,
        max_steps=max_steps,
        eval_every=eval_every,
        save_every=10**9,  # only the final save (the cancel at the budget saves too)
        eval_blocks=eval_blocks,
        sample_tokens=sample_tokens,
        batch_size=batch_size,
        name=name,
        time_budget=budget_s,  # the product's --time path: the rate warms up, holds and decays on the clock
    )
    job = TrainingJob(cfg, rec)
    t0 = time.perf_counter()
    result = job.run()
    end = time.perf_counter()
    return result, rec, {"prep_s": (rec.begin or end) - t0, "train_s": end - (rec.begin or end)}


def stream(chat, prompt_ids: list[int], *, max_new_tokens: int, temperature: float, top_k: int, seed: int):
    """``ChatModel.stream`` on a worker thread (``GenerationJob``, as the app runs it), the events
    read from a queue; consumer-side timings like the baseline's streamer."""
    import queue

    from engine.events import GenerationFailed, GenerationFinished, TokenGenerated
    from engine.generation.chat_model import GenerationJob
    from engine.store.settings import Sampling

    from .baseline import _gen_stats

    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=1.0, repetition_penalty=1.0,
                        max_new_tokens=max_new_tokens, seed=seed)
    events: queue.Queue = queue.Queue()
    t0 = time.perf_counter()
    job = GenerationJob(chat, prompt_ids, sampling, events.put).start()
    first = last = None
    new = 0
    pieces = []
    while True:
        event = events.get()
        if isinstance(event, TokenGenerated) and event.text:
            now = time.perf_counter()
            first = first or now
            last = now
            pieces.append(event.text)
        elif isinstance(event, GenerationFinished):
            new = event.new_tokens
            break
        elif isinstance(event, GenerationFailed):
            raise RuntimeError(event.error)
    job.join()
    return _gen_stats(t0, first, last or time.perf_counter(), new, "".join(pieces))
