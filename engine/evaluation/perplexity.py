"""Loss, token perplexity, bits per byte and (on word-level text) word perplexity over
packed blocks.

Bits per byte divides the summed loss (in bits) by the bytes of text the predicted tokens
stand for, so models with different tokenizers compare fairly.  Word perplexity,
exp(nats / words), puts the same nats over the words those tokens stand for (see
``engine.evaluation.words``), as published WikiText tables do.  The loss is taken over hidden states a
slice at a time (``engine.loss``), so full-vocabulary logits for a whole batch never exist.
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
    words: int | None = None  # on word-level text: words (and line ends) the predicted tokens cover
    word_perplexity: float | None = None


def evaluate(
    model,
    blocks,
    token_bytes,
    device: str = "cpu",
    dtype: str = "fp32",
    batch_size: int | None = None,
    stop: threading.Event | None = None,
    word_table=None,
) -> EvalResult | None:
    """Evaluate ``model`` on a BlockDataset.  ``token_bytes``: bytes per token id (list or tensor).
    ``word_table`` (an ``engine.evaluation.words.WordTable``): also count words, for word perplexity."""
    import torch
    import torch.nn.functional as F

    from engine.loss import final_hidden_states, linear_cross_entropy, supports_hidden_state_loss
    from engine.model import autocast

    if len(blocks) == 0:
        return None
    table = torch.as_tensor(token_bytes, dtype=torch.long, device=device)
    if word_table is not None:
        inner, lead, trail = (torch.as_tensor(x, dtype=torch.long, device=device) for x in (word_table.inner, word_table.lead, word_table.trail))
    hidden_loss = supports_hidden_state_loss(model)
    head = model.get_output_embeddings().weight if hidden_loss else None
    block = blocks.block_size
    batch_size = batch_size or max(1, 8192 // block)
    was_training = model.training
    model.eval()
    nats = 0.0
    tokens = 0
    nbytes = 0
    words = 0
    try:
        with torch.inference_mode(), autocast(device, dtype):
            for start in range(0, len(blocks), batch_size):
                if stop is not None and stop.is_set():
                    break
                items = [blocks[i] for i in range(start, min(start + batch_size, len(blocks)))]
                # blocks of one batch have one length, except a lone short split
                ids = torch.stack([it["input_ids"] for it in items]).to(device)
                labels = torch.stack([it["labels"] for it in items]).to(device)
                target = labels[:, 1:]
                if hidden_loss:
                    hidden = final_hidden_states(model, ids)[:, :-1, :]
                    loss = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head, target.reshape(-1), divisor=1)
                else:
                    logits = model(input_ids=ids).logits[:, :-1, :]
                    loss = F.cross_entropy(
                        logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
                    )
                mask = target != -100
                nats += float(loss)
                tokens += int(mask.sum())
                safe = target.clamp(min=0)
                nbytes += int(table[safe][mask].sum())
                if word_table is not None:
                    per_token = inner[safe] + lead[safe] * trail[ids[:, :-1]]
                    words += int(per_token[mask].sum())
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
        words=words if word_table is not None else None,
        word_perplexity=math.exp(min(nats / words, 700)) if word_table is not None and words else None,
    )
