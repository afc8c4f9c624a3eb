"""``python -m bench per-step``: how much a recipe change learns per optimizer step.

The sweep (``python -m bench sweep``) scores whole ``train --time`` runs, so its scores also
follow the machine's speed, which drifts on a shared VM by 10% or more between runs.  Changes
that cost nothing per step (optimizer settings, the activation) are better judged at an equal
number of steps: this runs each variant for ``--steps`` optimizer steps on the same batches, in
one process, with the engine's parts (``build_model``, the chunked loss, ``param_groups``, fused
AdamW, clipping at 1.0, the time schedule's warmup / stable / warmdown shape over steps), and
scores the first ``--val-blocks`` blocks of the validation split.  Each variant runs once per
``--seeds`` entry (the spread between seeds is the noise to compare against).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

# (name, build_model activation, AdamW beta2, embedding lr scale)
VARIANTS = (
    ("the old recipe (gelu, beta2 0.95, one rate)", "gelu", 0.95, 1.0),
    ("beta2 0.99", "gelu", 0.99, 1.0),
    ("beta2 0.99, relu2", "relu2", 0.99, 1.0),
    ("beta2 0.99, embeddings at 5x", "gelu", 0.99, 5.0),
    ("beta2 0.99, relu2, embeddings at 5x (the defaults)", "relu2", 0.99, 5.0),
)


def run_variant(packed, tokenizer, steps: int, val_blocks: int, activation: str, beta2: float, emb_scale: float, seed: int) -> dict:
    import torch

    from engine.evaluation.perplexity import evaluate
    from engine.loss import causal_lm_loss
    from engine.model import build_model, get_preset
    from engine.training.optim import param_groups
    from engine.training.schedule import budget_lr_factor
    from engine.data.tokenizer import token_byte_lengths

    preset = get_preset("seed")
    block, batch, lr = preset.block_size, preset.batch_size, preset.lr
    torch.manual_seed(seed)
    model = build_model(preset, len(tokenizer), block, tokenizer.eos_token_id, activation=activation)
    model.train()
    decay = {n for n, p in model.named_parameters() if p.ndim >= 2}
    opt = torch.optim.AdamW(param_groups(model, decay, 0.1, lr, emb_scale), lr=lr, betas=(0.9, beta2), fused=True)
    peaks = [g["lr"] for g in opt.param_groups]
    train = packed.blocks("train")
    n_blocks = len(packed.splits["train"]) // block  # whole blocks only (no overlapping tail)
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        factor = budget_lr_factor(step + 1, steps)
        for group, peak in zip(opt.param_groups, peaks):
            group["lr"] = peak * factor
        rows = [order[(step * batch + i) % n_blocks] for i in range(batch)]
        x = torch.stack([train[r]["input_ids"] for r in rows])
        hidden = model.transformer(input_ids=x, use_cache=False).last_hidden_state
        loss = causal_lm_loss(hidden, model.lm_head.weight, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    val = evaluate(model, packed.blocks("validation", limit=val_blocks), token_byte_lengths(tokenizer))
    return {"val_loss": round(val.loss, 4), "train_loss_last_50": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            "ms_per_step": round(seconds / steps * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    from .__main__ import DEFAULT_DATA
    from .run import machine

    ap = argparse.ArgumentParser(prog="python -m bench per-step", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps per variant (default 500)")
    ap.add_argument("--seeds", default="1337,7", help="comma-separated seeds (default 1337,7)")
    ap.add_argument("--val-blocks", type=int, default=300, help="validation blocks scored (default 300)")
    ap.add_argument("--data", default=None, help="dataset folder or file (default ../shared/data/wikitext-2)")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)

    from engine.data import sources as data_mod
    from engine.data import tokenizer as tok_mod
    from engine.model import quiet_transformers
    from engine.training.config import DEFAULT_TOKENIZER

    quiet_transformers()
    source = data_mod.resolve(args.data or DEFAULT_DATA)
    _, size = tok_mod.parse_spec(DEFAULT_TOKENIZER)
    tokenizer = tok_mod.train_bpe(lambda: (t for b in source.iter_text("train") for t in b), size, source.key)
    packed = data_mod.pack(source, tokenizer, 128)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for name, activation, beta2, scale in VARIANTS:
        for seed in seeds:
            row = {"variant": name, "activation": activation, "adam_beta2": beta2, "embedding_lr_scale": scale, "seed": seed,
                   **run_variant(packed, tokenizer, args.steps, args.val_blocks, activation, beta2, scale, seed)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    report = {"bench": "per-step", "started": started, "machine": machine(),
              "steps": args.steps, "val_blocks": args.val_blocks, "tokenizer": DEFAULT_TOKENIZER, "preset": "seed", "runs": rows}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MINIGPT_OFFLINE", "1")
    sys.exit(main())
