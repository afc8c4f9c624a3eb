"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer.

Muon (Jordan et al. 2024; ``torch.optim.Muon``) replaces each 2-D hidden weight's momentum
update by its nearest semi-orthogonal matrix (a Newton-Schulz iteration).  Embeddings, the
LM head, norms and biases stay with AdamW.  Both live in one ``torch.optim.Optimizer`` so
that the Trainer's scheduler, gradient clipping, checkpointing and resume see one object.

The update is ``torch.optim.Muon``'s (same coefficients, nesterov momentum, decoupled weight
decay, ``adjust_lr_fn="match_rms_adamw"`` so one learning rate suits both halves).  The one
change: ``torch.optim.Muon`` always runs Newton-Schulz in bf16, which a CPU without native
bf16 (no AVX512-BF16/AMX) emulates slowly (measured: 96 steps where AdamW made 354 in the same
3 minutes); here the iteration runs in fp32 there and in bf16 where bf16 is native.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults
NS_STEPS = 5


def orthogonalize(grad: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.float32, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz iteration towards U V^T of grad = U S V^T (as torch.optim.Muon, in ``dtype``)."""
    a, b, c = NS_COEFFICIENTS
    x = grad.to(dtype)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def ns_dtype_for(device: str) -> torch.dtype:
    """bf16 where it is native (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32."""
    from engine.model import cpu_has_fast_bf16

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def param_groups(model, decay_names, weight_decay: float, lr: float, embedding_lr_scale: float = 1.0,
                 muon: bool = False) -> list[dict]:
    """The optimizer's groups: with ``muon``, Muon for 2-D weights outside embeddings and the
    head; AdamW with or without decay for the rest (as the Trainer groups them).  The token
    embeddings (tied to the head in these models) get a group of their own at
    ``embedding_lr_scale`` x ``lr`` when that is not 1."""
    embeddings = model.get_input_embeddings().weight
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        embedding_ids.add(id(head.weight))
    scaled = embedding_lr_scale != 1.0
    hidden, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (scaled and p is embeddings):
            continue
        if muon and p.ndim == 2 and id(p) not in embedding_ids:
            hidden.append(p)
        elif name in decay_names:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": hidden, "use_muon": True, "weight_decay": weight_decay},
        {"params": decay, "use_muon": False, "weight_decay": weight_decay},
        {"params": no_decay, "use_muon": False, "weight_decay": 0.0},
    ]
    if scaled and embeddings.requires_grad:
        groups.append({"params": [embeddings], "use_muon": False, "weight_decay": weight_decay, "lr": lr * embedding_lr_scale})
    groups = [g for g in groups if g["params"]]
    if not muon:
        for g in groups:
            del g["use_muon"]
    return groups


class MuonWithAdamW(torch.optim.Optimizer):
    """Param groups with ``use_muon=True`` take Muon steps; the others AdamW steps."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = NS_STEPS,
        ns_dtype: torch.dtype = torch.float32,
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, use_muon=False
        )
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon(p, group, lr, wd)
                else:
                    self._adamw(p, group, lr, wd)
        return loss

    def _muon(self, p, group, lr, wd) -> None:
        grad = p.grad
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - group["momentum"])
        update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
        update = orthogonalize(update, group["ns_steps"], self.ns_dtype)
        scale = 0.2 * math.sqrt(max(p.shape[0], p.shape[1]))  # match_rms_adamw
        p.mul_(1 - lr * wd)
        p.add_(update.to(p.dtype), alpha=-lr * scale)

    def _adamw(self, p, group, lr, wd) -> None:
        grad = p.grad
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        p.mul_(1 - lr * wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
