"""A lean decode path for GPT-2 models: the same weights, a preallocated KV cache, few ops.

The transformers model stays the source of truth: ``GPT2FastDecoder`` holds references to the
model's own ``Parameter`` objects (no copies, so a training run's optimizer steps are seen at
once) and recomputes the same arithmetic as ``GPT2LMHeadModel.forward``: Conv1D as
``addmm(bias, x, W)`` (weights stored ``[in, out]``), layer norms, GPT-2's tanh GELU (PyTorch's
fused kernel instead of ``gelu_new``'s seven ops; other activations run the model's own module),
attention with the model's scaling (``scaled_dot_product_attention`` over the prompt, and for one
new token ``softmax(q K^T * scale) V`` as ``baddbmm`` (the scale as its alpha) and ``bmm``,
faster at these sizes), and on a CPU the LM head over a transposed copy (``_head_logits``).
What it drops is the per-token Python around that arithmetic: the ``DynamicCache`` (``torch.cat``
per layer per token), masks, output dataclasses, hooks and dispatch.  Greedy decoding gives the
same tokens as ``model.generate`` (tests/test_generate.py).

The cache is one tensor per layer for keys and one for values, ``[heads, n_positions,
head_dim]``, allocated once per decoder; ``prefill`` runs the prompt in one pass and fills
positions ``0..T-1``, ``step`` runs one token at position ``T`` and writes its key and value
in place.  Sliding the window is a new prefill (absolute positions cannot be shifted), as on
the reference path.

``GPT2LMHeadModel`` (the presets, GPT-2 and distilgpt2 from the Hugging Face cache) and
``LlamaForCausalLM`` with the default rotary embedding (``--arch llama``: RMSNorm, rotary
positions, SwiGLU, grouped-query attention) are supported; ``unsupported_reason`` says why
another model takes the reference path, and ``make_decoder`` builds the right one.
"""

from __future__ import annotations


def unsupported_reason(model) -> str | None:
    """None when a fast decoder can run this model, else a few words why not."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    name = type(model).__name__
    if kind == "gpt2" and name == "GPT2LMHeadModel":
        if getattr(cfg, "add_cross_attention", False):
            return "cross-attention is not supported"
        if getattr(cfg, "_attn_implementation", "sdpa") == "eager" and getattr(cfg, "reorder_and_upcast_attn", False):
            return "reorder_and_upcast_attn is not supported"
    elif kind == "llama" and name == "LlamaForCausalLM":
        rope = getattr(cfg, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            return f"rope type {rope.get('rope_type')} is not supported"
        if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
            return "only SiLU MLPs without biases are supported"
    else:
        return f"no fast path for {kind or name} models"
    if model.training:
        return "the model is in training mode"
    return None


def make_decoder(model, cache_dtype=None):
    """The fast decoder for ``model`` (check ``unsupported_reason`` first)."""
    if model.config.model_type == "llama":
        return LlamaFastDecoder(model, cache_dtype)
    return GPT2FastDecoder(model, cache_dtype)


class _CachedDecoder:
    """What both decoders share: the check that the model's weights are still the ones the
    decoder points at, and the position of the next token in the cache."""

    def matches(self, model, cache_dtype=None) -> bool:
        """Still usable for ``model`` (same module, weights not moved or resized)?"""
        return model is self.model and self._key == self._weights_key() and (cache_dtype or self.weight_dtype) == self.dtype

    def _prompt_length(self, ids) -> int:
        t = int(ids.shape[0])
        if t > self.ctx:
            raise ValueError(f"prompt of {t} tokens is longer than the window ({self.ctx})")
        return t

    def _next_position(self) -> int:
        if self.pos >= self.ctx:
            raise ValueError("the window is full: prefill again")
        return self.pos

    def _head_logits(self, h, head, bias=None):
        """``h`` [1, C] through the LM head: ``head`` (a low-precision copy) when given, else the
        model's own head, on a CPU in fp32 as ``h @ W^T`` with ``W^T`` stored contiguous.

        The head is the biggest matrix a small model reads per token (16,384 x 128 fp32 = 8 MB
        for ``seed``).  As ``linear(h, W)`` (the weight as the model stores it, [vocab, C]) a
        one-row product took 2.0 ms of a decode step on one thread of a 2-core AVX2 CPU; over
        the transposed copy, [C, vocab], 0.8 ms (the step with and without the head, medians).
        The copy is remade when the weight changes (training samples decode between optimizer
        steps): it is keyed by the weight's pointer, shape and in-place version counter."""
        import torch
        import torch.nn.functional as F

        w = head if head is not None else self.lm_head
        if h.dtype != w.dtype:
            h = h.to(w.dtype)
        if head is not None or w.device.type != "cpu" or w.dtype != torch.float32:
            return F.linear(h, w, bias)
        key = (w.data_ptr(), _version(w), w.shape)
        if getattr(self, "_head_t_key", None) != key:
            self._head_t = None  # let the old copy go before making the new one
            with torch.no_grad():
                self._head_t = w.detach().t().contiguous()
            self._head_t_key = key
        return torch.addmm(bias, h, self._head_t) if bias is not None else torch.mm(h, self._head_t)


class GPT2FastDecoder(_CachedDecoder):
    """Prefill + one-token steps over a ``GPT2LMHeadModel``'s parameters.

    ``head`` optionally replaces the LM head weight (a bf16 copy on CPUs with fast bf16).
    ``cache_dtype``: the dtype of keys and values (bf16 when the caller runs it under a bf16
    autocast, as the reference path does on CUDA; else the weights' dtype).
    Not thread safe: one reply at a time per decoder (``ChatModel`` makes one per thread use).
    """

    def __init__(self, model, cache_dtype=None):
        import torch

        cfg = model.config
        tr = model.transformer
        self.model = model
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.head_dim = cfg.n_embd // cfg.n_head
        self.ctx = int(cfg.n_positions)
        self.eps = cfg.layer_norm_epsilon
        self.wte, self.wpe = tr.wte.weight, tr.wpe.weight
        self.ln_f = (tr.ln_f.weight, tr.ln_f.bias)
        self.lm_head = model.lm_head.weight
        self.has_head_bias = getattr(model.lm_head, "bias", None) is not None
        device = self.wte.device
        self.weight_dtype = self.wte.dtype
        self.dtype = cache_dtype or self.weight_dtype
        self.layers = []
        for i, block in enumerate(tr.h):
            attn, mlp = block.attn, block.mlp
            act = _FUSED_ACTIVATIONS.get(cfg.activation_function, mlp.act)
            self.layers.append(
                (
                    (block.ln_1.weight, block.ln_1.bias),
                    attn.c_attn.weight,
                    attn.c_attn.bias,
                    attn.c_proj.weight,
                    attn.c_proj.bias,
                    (block.ln_2.weight, block.ln_2.bias),
                    mlp.c_fc.weight,
                    mlp.c_fc.bias,
                    mlp.c_proj.weight,
                    mlp.c_proj.bias,
                    act,
                    _attn_scale(cfg, attn, i),
                )
            )
        # keys and values of all layers in one tensor: [layer, k|v, head, position, head_dim]
        self.kv = torch.zeros((len(self.layers), 2, self.n_head, self.ctx, self.head_dim), dtype=self.dtype, device=device)
        # per layer: the cache, its keys transposed for q @ K^T, and its values (views)
        self.cache_views = [(kv, kv[0].transpose(1, 2), kv[1]) for kv in self.kv]
        self.zero = torch.zeros((1, 1, 1), dtype=self.dtype, device=device)  # baddbmm's ignored input (beta=0)
        self.pos = 0
        self._key = self._weights_key()

    def _weights_key(self):
        return (self.wte.data_ptr(), self.wte.device, self.wte.dtype, len(self.model.transformer.h))

    # --- the arithmetic ---
    def prefill(self, ids, head=None):
        """Run the prompt ``ids`` ([1, T] or [T] long tensor) from position 0; logits of its last
        position, [1, vocab]."""
        import torch
        import torch.nn.functional as F

        ids = ids.reshape(-1)
        t = self._prompt_length(ids)
        nh, hd, c, eps = self.n_head, self.head_dim, self.n_embd, self.eps
        x = self.wte[ids] + self.wpe[:t]
        sdpa = F.scaled_dot_product_attention
        ln = torch.layer_norm
        addmm = torch.addmm
        shape = (c,)
        for i, (ln1, wa, ba, wp, bp, ln2, wf, bf, wm, bm, act, scale) in enumerate(self.layers):
            h = ln(x, shape, ln1[0], ln1[1], eps)
            q, k, v = addmm(ba, h, wa).split(c, dim=1)
            q = q.view(t, nh, hd).transpose(0, 1)
            k = k.view(t, nh, hd).transpose(0, 1)
            v = v.view(t, nh, hd).transpose(0, 1)
            self.kv[i, 0, :, :t].copy_(k)
            self.kv[i, 1, :, :t].copy_(v)
            a = sdpa(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), is_causal=t > 1, scale=scale)
            x = x + addmm(bp, a[0].transpose(0, 1).reshape(t, c), wp)
            h = ln(x, shape, ln2[0], ln2[1], eps)
            x = x + addmm(bm, act(addmm(bf, h, wf)), wm)
        self.pos = t
        return self._logits(x[-1:], head)

    def step(self, token: int, head=None):
        """Run one token at the next position; its logits, [1, vocab]."""
        import torch

        pos = self._next_position()
        nh, hd, c, eps = self.n_head, self.head_dim, self.n_embd, self.eps
        x = torch.add(self.wte[token], self.wpe[pos]).view(1, c)
        ln, addmm, bmm, baddbmm, softmax = torch.layer_norm, torch.addmm, torch.bmm, torch.baddbmm, torch.softmax
        zero = self.zero
        shape = (c,)
        end = pos + 1
        for (ln1, wa, ba, wp, bp, ln2, wf, bf, wm, bm, act, scale), (kv, keys_t, values) in zip(self.layers, self.cache_views):
            h = ln(x, shape, ln1[0], ln1[1], eps)
            qkv = addmm(ba, h, wa).view(3, nh, 1, hd)
            kv.select(2, pos).copy_(qkv.narrow(0, 1, 2).view(2, nh, hd))
            # one query over the cache: softmax(q K^T * scale) V, per head
            scores = baddbmm(zero, qkv[0], keys_t.narrow(2, 0, end), beta=0, alpha=scale)
            a = bmm(softmax(scores, -1), values.narrow(1, 0, end))
            x = x + addmm(bp, a.view(1, c), wp)
            h = ln(x, shape, ln2[0], ln2[1], eps)
            x = x + addmm(bm, act(addmm(bf, h, wf)), wm)
        self.pos = end
        return self._logits(x, head)

    def _logits(self, x, head):
        import torch

        h = torch.layer_norm(x, (self.n_embd,), self.ln_f[0], self.ln_f[1], self.eps)
        return self._head_logits(h, head, self.model.lm_head.bias if self.has_head_bias else None)


class LlamaFastDecoder(_CachedDecoder):
    """Prefill + one-token steps over a ``LlamaForCausalLM``'s parameters (no copies), as its
    forward computes them: RMSNorm, rotary positions from the model's own ``inv_freq`` (a cos/sin
    table for every position, made once), grouped-query attention over a preallocated cache
    (query heads grouped per key head: no repeated keys), SwiGLU, the (tied) head.  Same
    interface and caveats as ``GPT2FastDecoder``."""

    def __init__(self, model, cache_dtype=None):
        import torch

        cfg = model.config
        inner = model.model
        self.model = model
        self.n_head = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_head
        self.n_embd = cfg.hidden_size
        self.ctx = int(cfg.max_position_embeddings)
        self.embed = inner.embed_tokens.weight
        self.norm = (inner.norm.weight, float(inner.norm.variance_epsilon))
        self.lm_head = model.lm_head.weight
        self.has_head_bias = False
        device = self.embed.device
        self.weight_dtype = self.embed.dtype
        self.dtype = cache_dtype or self.weight_dtype
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    (layer.input_layernorm.weight, float(layer.input_layernorm.variance_epsilon)),
                    attn.q_proj.weight,
                    attn.k_proj.weight,
                    attn.v_proj.weight,
                    attn.o_proj.weight,
                    (layer.post_attention_layernorm.weight, float(layer.post_attention_layernorm.variance_epsilon)),
                    mlp.gate_proj.weight,
                    mlp.up_proj.weight,
                    mlp.down_proj.weight,
                    float(attn.scaling),
                )
            )
        rotary = inner.rotary_emb
        positions = torch.arange(self.ctx, device=device, dtype=torch.float32)
        freqs = positions[:, None] * rotary.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        table = torch.cat((freqs, freqs), dim=-1)
        scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos = (table.cos() * scale).to(self.embed.dtype)  # [position, head_dim]
        self.sin = (table.sin() * scale).to(self.embed.dtype)
        self.kv = torch.zeros((len(self.layers), 2, self.n_kv, self.ctx, self.head_dim), dtype=self.dtype, device=device)
        self.cache_views = [(kv, kv[0].transpose(1, 2), kv[1]) for kv in self.kv]
        self.zero = torch.zeros((1, 1, 1), dtype=self.dtype, device=device)  # baddbmm's ignored input (beta=0)
        self.pos = 0
        self._key = self._weights_key()

    def _weights_key(self):
        return (self.embed.data_ptr(), self.embed.device, self.embed.dtype, len(self.model.model.layers))

    def _rotate(self, x, cos, sin):
        """Rotary positions: x * cos + rotate_half(x) * sin (the last dim is head_dim)."""
        import torch

        half = self.head_dim // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def prefill(self, ids, head=None):
        import torch
        import torch.nn.functional as F

        ids = ids.reshape(-1)
        t = self._prompt_length(ids)
        nh, nkv, hd, c = self.n_head, self.n_kv, self.head_dim, self.n_embd
        rms, linear = torch.rms_norm, F.linear
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed[ids]
        for i, (n1, wq, wk, wv, wo, n2, wg, wu, wd, scale) in enumerate(self.layers):
            h = rms(x, (c,), n1[0], n1[1])
            q = self._rotate(linear(h, wq).view(t, nh, hd).transpose(0, 1), cos, sin)
            k = self._rotate(linear(h, wk).view(t, nkv, hd).transpose(0, 1), cos, sin)
            v = linear(h, wv).view(t, nkv, hd).transpose(0, 1)
            self.kv[i, 0, :, :t].copy_(k)
            self.kv[i, 1, :, :t].copy_(v)
            if nkv != nh:
                k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
            a = F.scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), is_causal=t > 1, scale=scale)
            x = x + linear(a[0].transpose(0, 1).reshape(t, nh * hd), wo)
            h = rms(x, (c,), n2[0], n2[1])
            x = x + linear(F.silu(linear(h, wg)) * linear(h, wu), wd)
        self.pos = t
        return self._logits(x[-1:], head)

    def step(self, token: int, head=None):
        import torch
        import torch.nn.functional as F

        pos = self._next_position()
        nh, nkv, hd, c = self.n_head, self.n_kv, self.head_dim, self.n_embd
        rms, linear, bmm, baddbmm, softmax = torch.rms_norm, F.linear, torch.bmm, torch.baddbmm, torch.softmax
        zero = self.zero
        cos, sin = self.cos[pos], self.sin[pos]
        end = pos + 1
        group = nh // nkv
        x = self.embed[token].view(1, c)
        for (n1, wq, wk, wv, wo, n2, wg, wu, wd, scale), (kv, keys_t, values) in zip(self.layers, self.cache_views):
            h = rms(x, (c,), n1[0], n1[1])
            qk = self._rotate(torch.cat((linear(h, wq), linear(h, wk)), dim=1).view(nh + nkv, hd), cos, sin)
            kv[0, :, pos].copy_(qk[nh:])
            kv[1, :, pos].copy_(linear(h, wv).view(nkv, hd))
            # the query heads of each key head together: [kv head, group, head_dim] x [kv head, head_dim, end]
            scores = baddbmm(zero, qk[:nh].view(nkv, group, hd), keys_t.narrow(2, 0, end), beta=0, alpha=scale)
            a = bmm(softmax(scores, -1), values.narrow(1, 0, end))
            x = x + linear(a.view(1, nh * hd), wo)
            h = rms(x, (c,), n2[0], n2[1])
            x = x + linear(F.silu(linear(h, wg)) * linear(h, wu), wd)
        self.pos = end
        return self._logits(x, head)

    def _logits(self, x, head):
        import torch

        h = torch.rms_norm(x, (self.n_embd,), self.norm[0], self.norm[1])
        return self._head_logits(h, head)


def _version(t) -> int | None:
    """The tensor's in-place update counter (None for inference tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _attn_scale(cfg, attn, layer: int) -> float:
    """The attention's score scale, as GPT2Attention computes it."""
    scale = getattr(attn, "scaling", None)
    if scale is not None:
        return float(scale)
    scale = (cfg.n_embd // cfg.n_head) ** -0.5 if cfg.scale_attn_weights else 1.0
    return scale / (layer + 1) if cfg.scale_attn_by_inverse_layer_idx else scale


def _gelu_tanh(x):
    import torch.nn.functional as F

    return F.gelu(x, approximate="tanh")


# GPT-2's gelu_new is tanh-GELU written as seven tensor ops in Python; PyTorch's fused kernel
# computes the same function (differences in the last float bits) in one.  Other activations
# run the model's own module.
_FUSED_ACTIVATIONS = {"gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh}
