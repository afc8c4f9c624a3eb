"""Causal-LM cross-entropy over hidden states, a slice of rows at a time.

``model(...).logits`` holds ``batch x block x vocab`` floats, and training keeps them (and
their gradient) for the backward pass: with GPT-2's 50,257 tokens, batch 16 and block 128
that is 412 MB each.  Here the final hidden states are multiplied by the LM head a slice of
rows at a time; each slice's loss and its gradient (softmax minus one-hot) are made in the
forward pass and the logits are dropped, so at most ``chunk_rows x vocab`` of them exist at
once.  The arithmetic is the plain loss's (same FLOPs: the head's two gradient products
move from backward to forward), and so is the value.  A slice is ~16 MB of logits, which
stays in cache, and the head's gradient is summed in place: on a 2-core AVX2 CPU that made a
``seed`` training step 1.11x faster than 64 MB slices, with GPT-2's vocabulary and a 16k BPE.
"""

from __future__ import annotations

IGNORE = -100
CHUNK_BYTES = 16 << 20  # fp32 logits per slice


def chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_BYTES // (4 * max(1, vocab)))


def _make_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """sum over rows of -log softmax(hidden @ weight.T)[target], divided by ``divisor``."""

        @staticmethod
        def forward(ctx, hidden, weight, targets, divisor, rows, grads):
            # (needs_input_grad says True under no_grad/inference_mode too: evaluation would
            # pay for two gradient products per slice; ``grads`` is the caller's grad mode)
            want_h, want_w = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
            n = hidden.shape[0]
            w = weight.to(hidden.dtype)
            total = torch.zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
            grad_h = torch.empty_like(hidden) if want_h else None
            grad_w = torch.zeros(weight.shape, dtype=total.dtype, device=weight.device) if want_w else None
            valid = targets != IGNORE
            safe = targets.clamp(min=0)
            # the gradient of the loss over the logits is (softmax - one-hot) / divisor on the rows
            # with a target: the rows without one are zeroed and the division applied on the
            # small [rows, C] sides of the products, never in a pass over a slice of logits
            keep = valid.to(hidden.dtype)[:, None]
            kept = hidden * keep if want_w else None
            scale = 1.0 / divisor
            lost = torch.zeros(n, dtype=torch.bool, device=hidden.device)
            for start in range(0, n, rows):
                end = min(start + rows, n)
                t = safe[start:end]
                probs = torch.softmax((hidden[start:end] @ w.T).to(total.dtype), dim=-1)
                # -log p(target) from the softmax: one pass over the logits where log_softmax then
                # exp took three (4.8 vs 10.7 ms for a 256 x 16,384 slice, 2-core AVX2)
                nll = probs.gather(1, t[:, None]).squeeze(1).log_().neg_()
                lost[start:end] = torch.isinf(nll) & valid[start:end]
                total += nll.masked_fill_(~valid[start:end] | lost[start:end], 0.0).sum()
                if want_h or want_w:
                    probs[torch.arange(end - start, device=t.device), t] -= 1.0
                    g = probs.to(hidden.dtype)
                    if want_h:
                        torch.mm(g, w, out=grad_h[start:end])
                    if want_w and g.dtype == grad_w.dtype:
                        grad_w.addmm_(g.T, kept[start:end], alpha=scale)
                    elif want_w:
                        grad_w.add_((g.T @ kept[start:end]).to(grad_w.dtype), alpha=scale)
                del probs
            if want_h:
                grad_h.mul_(keep).mul_(scale)
            if bool(lost.any()):
                # a target's probability underflowed to 0 (its logit ~87+ nats below its row's
                # best): its loss from the logits, logsumexp - logit (the gradient was exact)
                idx = lost.nonzero().squeeze(1)
                logits = (hidden[idx] @ w.T).to(total.dtype)
                total += (torch.logsumexp(logits, dim=-1) - logits.gather(1, safe[idx][:, None]).squeeze(1)).sum()
            ctx.save_for_backward(
                grad_h if want_h else torch.empty(0), grad_w.to(weight.dtype) if want_w else torch.empty(0)
            )
            ctx.flags = (want_h, want_w)
            return total / divisor

        @staticmethod
        def backward(ctx, grad_out):
            grad_h, grad_w = ctx.saved_tensors
            want_h, want_w = ctx.flags
            return (grad_h * grad_out if want_h else None, grad_w * grad_out if want_w else None, None, None, None, None)

    return LinearCrossEntropy


_function = None


def linear_cross_entropy(hidden, weight, targets, divisor=None, rows: int | None = None):
    """Loss of predicting ``targets`` (N,) from ``hidden`` (N, d) through ``weight`` (V, d).

    ``divisor``: the count to average over (default: the targets that are not -100); pass the
    Trainer's ``num_items_in_batch`` under gradient accumulation.  1 gives the summed nats.
    """
    import torch

    global _function
    if _function is None:
        _function = _make_function()
    if divisor is None:
        divisor = (targets != IGNORE).sum().clamp(min=1).item()
    elif torch.is_tensor(divisor):
        divisor = divisor.item()
    return _function.apply(hidden, weight, targets, float(divisor), rows or chunk_rows(weight.shape[0]), torch.is_grad_enabled())


def causal_lm_loss(hidden, weight, labels, divisor=None, rows: int | None = None):
    """The loss transformers' ForCausalLM computes from logits (labels shifted left by one),
    from the final hidden states (B, T, d) instead."""
    target = labels[:, 1:].reshape(-1)
    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    return linear_cross_entropy(h, weight, target, divisor, rows)


def supports_hidden_state_loss(model) -> bool:
    """True for models whose logits are exactly ``final hidden state @ head.weight.T``
    (no bias, no scaling or soft-capping): GPT-2 and Llama-style models."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in ("gpt2", "llama", "mistral", "qwen2", "qwen3"):
        return False
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head is not None and getattr(head, "bias", None) is None


def final_hidden_states(model, input_ids, **kwargs):
    """The last layer's normalised hidden states, with the LM head run on one position only."""
    out = model(input_ids=input_ids, output_hidden_states=True, logits_to_keep=1, use_cache=False, **kwargs)
    return out.hidden_states[-1]
