"""Loss, token perplexity and bits per byte over packed blocks.

Bits per byte divides the summed loss (in bits) by the bytes of text the predicted tokens
stand for, so models with different tokenizers compare fairly.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean nats per predicted token
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int


def evaluate(
    model,
    blocks,
    token_bytes,
    device: str = "cpu",
    dtype: str = "fp32",
    batch_size: int | None = None,
    stop: threading.Event | None = None,
) -> EvalResult | None:
    """Evaluate ``model`` on a BlockDataset.  ``token_bytes``: bytes per token id (list or tensor)."""
    import torch
    import torch.nn.functional as F

    from .model import autocast

    if len(blocks) == 0:
        return None
    table = torch.as_tensor(token_bytes, dtype=torch.long, device=device)
    block = blocks.block_size
    batch_size = batch_size or max(1, 8192 // block)
    was_training = model.training
    model.eval()
    nats = 0.0
    tokens = 0
    nbytes = 0
    try:
        with torch.inference_mode(), autocast(device, dtype):
            for start in range(0, len(blocks), batch_size):
                if stop is not None and stop.is_set():
                    break
                items = [blocks[i] for i in range(start, min(start + batch_size, len(blocks)))]
                # blocks of one batch have one length, except a lone short split
                ids = torch.stack([it["input_ids"] for it in items]).to(device)
                labels = torch.stack([it["labels"] for it in items]).to(device)
                logits = model(input_ids=ids).logits[:, :-1, :]
                target = labels[:, 1:]
                loss = F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
                )
                mask = target != -100
                nats += float(loss)
                tokens += int(mask.sum())
                nbytes += int(table[target.clamp(min=0)][mask].sum())
    finally:
        model.train(was_training)
    if tokens == 0:
        return None
    mean = nats / tokens
    return EvalResult(
        loss=mean,
        perplexity=math.exp(min(mean, 700)),
        bits_per_byte=nats / math.log(2) / max(nbytes, 1),
        tokens=tokens,
        bytes=nbytes,
    )
