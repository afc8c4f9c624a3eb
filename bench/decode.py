"""Decode speed on the engine's own checkpoint: the fast path, the reference path and the
tutorial's ``model.generate`` + ``TextIteratorStreamer``, alternating in one process.

``measure_decode(checkpoint, prompt_ids, reps)`` -> the ``generation.decode`` section:

* the checkpoint (the bench's ``seed``-preset model with the default tokenizer), a 32-token
  prompt, 90 new tokens, temperature 0.8, top-k 50 (top-p and repetition penalty off, as the
  streamer baseline has them);
* engine: ``ChatModel.stream`` on a worker thread (``GenerationJob``, as the app runs it), once
  with ``decode="fast"`` (after ``warm_up``, the path "auto" takes) and once with
  ``decode="reference"``; consumer-side timings like the streamer's;
* time to first token with the 32-token prompt (the engine's fast path);
* the ``small`` preset (6 x 384, block 256) with the same tokenizer, fresh weights (decode speed
  does not depend on the weights), fast path.
"""

from __future__ import annotations

import statistics

PROMPT_TOKENS = 32
NEW_TOKENS = 90
TOP_K = 50
TEMPERATURE = 0.8


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def measure_decode(checkpoint: str, prompt_ids: list[int], reps: int = 3) -> dict:
    import torch

    from engine.generation.chat_model import ChatModel
    from engine.model import build_model, get_preset

    from . import baseline, engine_side

    prompt = [int(x) for x in prompt_ids[:PROMPT_TOKENS]]
    fast = ChatModel.from_checkpoint(checkpoint, device="cpu")  # decode "auto" (or MINIGPT_DECODE)
    note = fast.warm_up()
    ref = ChatModel(model=fast.model, tokenizer=fast.tokenizer, name=fast.name, device="cpu", dtype=fast.dtype, decode="reference")
    kw = dict(max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE, top_k=TOP_K)
    # warm-up passes (first-call allocations), not timed
    baseline.stream_generate(fast.model, fast.tokenizer, prompt, max_new_tokens=8, temperature=TEMPERATURE, top_k=TOP_K, seed=0)
    engine_side.stream(ref, prompt, **dict(kw, max_new_tokens=8), seed=0)
    engine_side.stream(fast, prompt, **dict(kw, max_new_tokens=8), seed=0)
    rows = {"fast": [], "reference": [], "streamer": []}
    for i in range(reps):
        rows["streamer"].append(baseline.stream_generate(fast.model, fast.tokenizer, prompt, seed=i, **kw))
        rows["reference"].append(engine_side.stream(ref, prompt, seed=i, **kw))
        rows["fast"].append(engine_side.stream(fast, prompt, seed=i, **kw))
    rate = {k: _median([r["tokens_per_s"] for r in v]) for k, v in rows.items()}
    ttft = _median([r["ttft_s"] for r in rows["fast"]])

    # the small preset: same tokenizer, fresh weights
    p = get_preset("small")
    torch.manual_seed(0)
    small_model = build_model(p, len(fast.tokenizer), p.block_size, fast.tokenizer.eos_token_id or 0).eval()
    small = ChatModel(model=small_model, tokenizer=fast.tokenizer, name="small", device="cpu", dtype=fast.dtype)
    small.warm_up()
    engine_side.stream(small, prompt, **dict(kw, max_new_tokens=8), seed=0)
    small_rows = [engine_side.stream(small, prompt, seed=i, **kw) for i in range(reps)]
    out = {
        "decode_path": fast.decode_path,
        "decode_note": note,
        "engine_tokens_per_s": rate["fast"],
        "reference_tokens_per_s": rate["reference"],
        "generate_streamer_tokens_per_s": rate["streamer"],
        "ratio_vs_streamer": _ratio(rate["fast"], rate["streamer"]),
        "ratio_vs_reference": _ratio(rate["fast"], rate["reference"]),
        "ttft_ms_32": ttft * 1000 if ttft is not None else None,
        "small_tokens_per_s": _median([r["tokens_per_s"] for r in small_rows]),
        "small_decode_path": small.decode_path,
        "new_tokens": {k: [r["new_tokens"] for r in v] for k, v in rows.items()},
        "small_new_tokens": [r["new_tokens"] for r in small_rows],
        "setup": f"checkpoint '{checkpoint}' (seed preset, its own tokenizer, {len(fast.tokenizer)} tokens), "
        f"{len(prompt)}-token prompt, {NEW_TOKENS} new tokens, temperature {TEMPERATURE}, top-k {TOP_K}, fp32 CPU; "
        "engine: GenerationJob + ChatModel.stream (fast after warm_up, and decode='reference'); "
        "baseline: model.generate on a thread + TextIteratorStreamer; small: 6x384 block 256, fresh weights, fast path",
    }
    return out


def measure_gpu_decode(quick: bool) -> dict:
    """The ``gpt2`` preset (124M, GPT-2 vocabulary) on CUDA in bf16 (autocast), fast path."""
    import torch

    from engine.generation.chat_model import ChatModel
    from engine.model import build_model, get_preset, pick_device
    from engine.data.tokenizer import load_gpt2

    from . import engine_side

    device, dtype = pick_device("cuda")
    p = get_preset("gpt2")
    tok = load_gpt2()
    torch.manual_seed(0)
    model = build_model(p, len(tok), p.block_size, tok.eos_token_id).to(device).eval()
    chat = ChatModel(model=model, tokenizer=tok, name="gpt2", device=device, dtype=dtype)
    note = chat.warm_up()
    prompt = list(range(1000, 1000 + PROMPT_TOKENS))
    kw = dict(max_new_tokens=256, temperature=TEMPERATURE, top_k=TOP_K)
    engine_side.stream(chat, prompt, **dict(kw, max_new_tokens=8), seed=0)
    rows = [engine_side.stream(chat, prompt, seed=i, **kw) for i in range(2 if quick else 3)]
    ref = ChatModel(model=model, tokenizer=tok, name="gpt2", device=device, dtype=dtype, decode="reference")
    ref_rows = [engine_side.stream(ref, prompt, seed=i, **kw) for i in range(2 if quick else 3)]
    return {
        "decode_path": chat.decode_path,
        "decode_note": note,
        "dtype": dtype,
        "gpt2_tokens_per_s": _median([r["tokens_per_s"] for r in rows]),
        "gpt2_reference_tokens_per_s": _median([r["tokens_per_s"] for r in ref_rows]),
        "ttft_ms_32": (_median([r["ttft_s"] for r in rows]) or 0) * 1000,
        "setup": f"gpt2 preset, fresh weights, {dtype} autocast, {PROMPT_TOKENS}-token prompt, 256 new tokens, top-k {TOP_K}",
    }


def main(argv: list[str] | None = None) -> dict:
    """``python -m bench.decode CHECKPOINT [--data DIR] [--reps N]``: this section alone on a
    checkpoint of the current store (the prompt: the first 32 tokens of the validation text),
    then the app's on-screen rate on the same checkpoint (bench/app_latency.py)."""
    import argparse
    import json
    from pathlib import Path

    from engine.generation.chat_model import ChatModel

    from .app_latency import measure_app
    from .run import machine

    p = argparse.ArgumentParser(prog="python -m bench.decode")
    p.add_argument("checkpoint")
    p.add_argument("--data", default="../shared/data/wikitext-2")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    chat = ChatModel.from_checkpoint(a.checkpoint, device="cpu")
    valid = next(Path(a.data).glob("*valid*"))
    prompt = chat.encode(valid.read_text(encoding="utf-8")[:4000])[:PROMPT_TOKENS]
    report = {"machine": machine(), "decode": measure_decode(a.checkpoint, prompt, reps=a.reps), "app": measure_app(a.checkpoint)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
