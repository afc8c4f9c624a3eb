"""The reference tutorial recipe, implemented faithfully (the benchmark's baseline side).

* GPT-2 tokenizer with ``pad_token = eos_token``;
* every line tokenized with ``truncation=True, padding="max_length", max_length=128``;
* ``labels = input_ids`` copied, so padding is trained on;
* ``GPT2Config(n_embd=128, n_layer=6, n_head=8)`` (its defaults otherwise: dropout 0.1, 1024 positions);
* ``Trainer`` with ``per_device_train_batch_size=8`` and its defaults otherwise (lr 5e-5, linear
  schedule, fp32 on CPU);
* generation with ``model.generate`` + ``TextIteratorStreamer`` on a thread.

Only instrumentation is added: a data collator wrapper counting the real (non-pad) tokens
of each batch, a callback timing steps and stopping at the wall budget, and output that
goes to a temporary folder with no progress bars.
"""

from __future__ import annotations

import threading
import time

MAX_LENGTH = 128
BATCH = 8


def tokenizer():
    from engine.data.tokenizer import load_gpt2

    tok = load_gpt2()
    tok.pad_token = tok.eos_token
    return tok


def tokenize_lines(source, tok, split: str = "train"):
    """The tutorial's ``dataset.map``: each line padded/truncated to 128, labels copied."""

    def tokenize(batch):
        out = tok(batch["text"], truncation=True, padding="max_length", max_length=MAX_LENGTH)
        out["labels"] = [list(ids) for ids in out["input_ids"]]
        return out

    ds = source.splits[split]
    return ds.map(tokenize, batched=True, remove_columns=ds.column_names)


def build_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_embd=128, n_layer=6, n_head=8))


class _Counter:
    """Wraps the default collator: records the real tokens (attention mask) of each batch."""

    def __init__(self):
        from transformers import default_data_collator

        self.collate = default_data_collator
        self.useful: list[int] = []
        self.total: list[int] = []

    def __call__(self, features):
        batch = self.collate(features)
        self.useful.append(int(batch["attention_mask"].sum()))
        self.total.append(int(batch["input_ids"].numel()))
        return batch


def train(train_set, out_dir: str, *, max_steps: int | None = None, budget_s: float | None = None, seed: int = 42):
    """Train a fresh tutorial model.  Returns (model, stats).

    stats: steps, train_s (from the Trainer's train begin), step_ends (perf_counter per step),
    useful/total tokens per batch, final loss.
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from engine.model import quiet_transformers

    quiet_transformers()
    counter = _Counter()

    class Clock(TrainerCallback):
        def __init__(self):
            self.begin = None
            self.step_ends: list[float] = []
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            self.step_ends.append(now)
            if budget_s is not None and now - self.begin >= budget_s:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    clock = Clock()
    extra = {"max_steps": max_steps} if max_steps else {}
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=BATCH,
        report_to="none",  # instrumentation: no trackers offline
        disable_tqdm=True,  # instrumentation: no progress bar in the bench's output
        seed=seed,
        **extra,
    )
    model = build_model()
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=counter, callbacks=[clock])
    result = trainer.train()
    end = time.perf_counter()
    steps = trainer.state.global_step
    return model, {
        "steps": steps,
        "train_s": end - clock.begin,
        "step_ends": clock.step_ends,
        "begin": clock.begin,
        # the dataloader may prefetch nothing here (0 workers): batches == steps
        "useful": counter.useful[:steps],
        "total": counter.total[:steps],
        "train_loss": float(result.training_loss),
    }


def stream_generate(model, tok, prompt_ids: list[int], *, max_new_tokens: int, temperature: float, top_k: int, seed: int):
    """``model.generate`` on a thread + ``TextIteratorStreamer``; consumer-side timings.

    Returns dict(ttft_s, total_s, new_tokens, tokens_per_s, text)."""
    import torch
    from transformers import TextIteratorStreamer

    torch.manual_seed(seed)
    ids = torch.tensor([prompt_ids])
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    box = {}

    def work():
        box["out"] = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=1.0,
            streamer=streamer,
            pad_token_id=tok.eos_token_id,
        )

    t0 = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    first = last = None
    chunks = []
    for text in streamer:
        if text:
            now = time.perf_counter()
            first = first or now
            last = now
            chunks.append(text)
    thread.join()
    end = time.perf_counter()
    new = int(box["out"].shape[1] - ids.shape[1]) if "out" in box else 0
    return _gen_stats(t0, first, last or end, new, "".join(chunks))


def _gen_stats(t0, first, last, new, text):
    ttft = (first - t0) if first else None
    rate = (new - 1) / (last - first) if first and last and last > first and new > 1 else None
    return {"ttft_s": ttft, "total_s": last - t0, "new_tokens": new, "tokens_per_s": rate, "text": text}
