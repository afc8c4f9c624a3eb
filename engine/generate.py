"""Token-by-token generation with a KV cache.

A hand-written decode loop (one forward per token over the cache, ``logits_to_keep=1`` on the
prompt) with transformers' own logits processors for repetition penalty, temperature, top-k
and top-p.  It yields typed events; ``GenerationJob`` runs it on a worker thread.  Cancelling
(``stop`` event) takes effect before the next token.  The prompt is never echoed.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from .errors import CheckpointError
from .events import GenerationEvent, GenerationFailed, GenerationFinished, GenerationStarted, Sink, TokenGenerated
from .settings import Sampling

# How many prompt tokens seed the incremental detokenizer, so the first reply token keeps its
# leading space (SentencePiece) and multi-byte characters come out whole.
_DETOK_CONTEXT = 5


@dataclass
class ChatModel:
    """A loaded model and tokenizer, ready to stream replies."""

    model: object
    tokenizer: object
    name: str
    device: str = "cpu"
    dtype: str = "fp32"
    meta: dict | None = None

    @classmethod
    def from_checkpoint(cls, name: str, store=None, device: str = "auto") -> "ChatModel":
        from .checkpoints import CheckpointStore
        from .model import pick_device

        from .model import to_inference_dtype

        dev, _ = pick_device(device)
        model, tokenizer, info = (store or CheckpointStore()).load(name, dev)
        return cls(model=model, tokenizer=tokenizer, name=name, device=dev, dtype=to_inference_dtype(model, dev), meta=info.meta)

    @classmethod
    def from_folder(cls, path, name: str | None = None, device: str = "auto") -> "ChatModel":
        """A model folder outside the store (e.g. a snapshot in the local Hugging Face cache)."""
        from pathlib import Path

        from .checkpoints import load_model_dir, safetensors_problem
        from .model import pick_device

        path = Path(path)
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise CheckpointError(f"{path} has no safetensors weights")
        for w in weights:
            problem = safetensors_problem(w)
            if problem:
                raise CheckpointError(f"{path.name}: {problem}")
        from .model import to_inference_dtype

        dev, _ = pick_device(device)
        model, tokenizer = load_model_dir(path, dev)
        return cls(model=model, tokenizer=tokenizer, name=name or path.name, device=dev, dtype=to_inference_dtype(model, dev))

    # --- prompts ---
    @property
    def n_positions(self) -> int:
        from .model import n_positions

        return n_positions(self.model)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids for a conversation: the chat template when the tokenizer has one, else a
        plain continuation prompt (the turns' text, one paragraph each)."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if hasattr(out, "get") and not isinstance(out, list):
                out = out.get("input_ids", out)
            if out and isinstance(out[0], list):
                out = out[0]
            return list(out)
        text = "\n\n".join(m["content"] for m in messages if m.get("content"))
        return tok(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- generation ---
    def stream(
        self,
        prompt: str | list[int],
        sampling: Sampling | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[GenerationEvent]:
        """Yield GenerationStarted, TokenGenerated..., then GenerationFinished (or GenerationFailed)."""
        try:
            yield from self._stream(prompt, (sampling or Sampling()).validated(), stop or threading.Event())
        except Exception as exc:  # a model that fails mid-reply must not take the app down
            yield GenerationFailed(error=f"{type(exc).__name__}: {exc}".splitlines()[0])

    def generate_text(self, prompt: str | list[int], sampling: Sampling | None = None) -> str:
        for event in self.stream(prompt, sampling):
            if isinstance(event, GenerationFinished):
                return event.text
            if isinstance(event, GenerationFailed):
                raise CheckpointError(event.error)
        return ""

    def _bf16_head(self):
        """A bf16 copy of a GPT-2 LM head, on CPUs with native bf16 (AVX512-BF16/AMX), else None.

        The head is most of a small model's decode step: 128 x 50,257 weights read for every
        token.  In bf16 that matrix-vector product takes ~0.6 ms instead of ~3.3 ms in fp32 (one
        core, bench/); the body stays in the model's precision.  The copy is remade when the
        weights change (training samples call this between optimizer steps).
        """
        import torch

        from .model import cpu_has_fast_bf16

        model = self.model
        if self.device != "cpu" or getattr(getattr(model, "config", None), "model_type", None) != "gpt2":
            return None
        lm = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if lm is None or getattr(lm, "bias", None) is not None or not hasattr(model, "base_model") or not cpu_has_fast_bf16():
            return None
        w = lm.weight
        key = (w.data_ptr(), w._version, w.shape)
        cached = getattr(self, "_head_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, w.detach().to(torch.bfloat16))
            self._head_cache = cached
        return cached[1]

    def _stream(self, prompt, sampling: Sampling, stop: threading.Event) -> Iterator[GenerationEvent]:
        import torch
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        from .model import autocast

        t0 = time.perf_counter()
        tok, model = self.tokenizer, self.model
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            ids = [tok.eos_token_id if tok.eos_token_id is not None else 0]
        ctx = self.n_positions
        max_new = sampling.max_new_tokens
        # Keep the end of the prompt: room for the reply, but never less than half the window
        # for the prompt (long replies slide the window instead, see below).
        budget = max(1, ctx - min(max_new, ctx // 2))
        truncated = max(0, len(ids) - budget)
        ids = ids[truncated:]
        yield GenerationStarted(prompt_tokens=len(ids), truncated_tokens=truncated, max_new_tokens=max_new)

        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        greedy = sampling.temperature == 0
        # temperature, top-k and top-p: _sample (the warpers' semantics on the k best logits only)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(sampling.seed if sampling.seed is not None else int(time.time_ns() % (2**63)))
        eos = tok.eos_token_id
        keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        cache_arg = "cache" if _accepts(model, "cache") else "past_key_values"  # renamed in transformers 5.2x

        context = torch.tensor([ids], dtype=torch.long, device=self.device)
        detok = _Detokenizer(tok, ids[-_DETOK_CONTEXT:])
        head = self._bf16_head()
        pieces: list[str] = []
        new_tokens = 0
        first_at = last_at = None
        reason = "length"
        with torch.inference_mode(), autocast(self.device, self.dtype), _one_cpu_thread(self.device):
            past = None
            step_input = context
            while new_tokens < max_new:
                if stop.is_set():
                    reason = "cancelled"
                    break
                if head is not None:  # the body, then the LM head on the last position in bf16
                    out = model.base_model(input_ids=step_input, use_cache=True, **{cache_arg: past})
                    last = torch.nn.functional.linear(out.last_hidden_state[:, -1, :].to(head.dtype), head)
                else:
                    out = model(input_ids=step_input, use_cache=True, **{cache_arg: past}, **keep)
                    last = out.logits[:, -1, :]
                past = getattr(out, "cache", None)
                if past is None:
                    past = getattr(out, "past_key_values", None)
                scores = last.float()
                if processors:
                    scores = processors(context, scores)
                if greedy:
                    next_id = scores.argmax(dim=-1, keepdim=True)
                else:
                    next_id = _sample(scores, sampling, gen)
                token = int(next_id)
                if eos is not None and token == eos:
                    reason = "eos"
                    break
                new_tokens += 1
                context = torch.cat([context, next_id], dim=1)
                piece = detok.push(token)
                now = time.perf_counter()
                if piece:
                    if first_at is None:
                        first_at = now
                    last_at = now
                    pieces.append(piece)
                    yield TokenGenerated(text=piece, index=new_tokens - 1, elapsed_s=now - t0)
                if context.shape[1] >= ctx:
                    # The window is full: slide it, re-reading the last half (absolute positions
                    # cannot be shifted inside the cache).
                    context = context[:, -(ctx // 2) :]
                    step_input, past = context, None
                else:
                    step_input = next_id
        tail = detok.flush()
        if tail:
            pieces.append(tail)
            if first_at is None:
                first_at = time.perf_counter()
            yield TokenGenerated(text=tail, index=new_tokens, elapsed_s=time.perf_counter() - t0)
        end = time.perf_counter()
        rate = (new_tokens - 1) / (last_at - first_at) if first_at and last_at and last_at > first_at and new_tokens > 1 else None
        yield GenerationFinished(
            text="".join(pieces),
            new_tokens=new_tokens,
            stop_reason=reason,
            time_to_first_token_s=(first_at - t0) if first_at else None,
            tokens_per_s=rate,
            elapsed_s=end - t0,
        )


def _one_cpu_thread(device: str):
    """Decode on one intra-op thread without changing training's threads (engine/threads.py)."""
    from .threads import one_decode_thread

    return one_decode_thread(device)


def _sample(scores, sampling: Sampling, gen):
    """One token id per row, as transformers' Temperature -> TopK -> TopP warpers + multinomial.

    Works on the k best logits only: a top-k over a 50,257-token vocabulary and a softmax over
    k values take ~0.2 ms, where masking, normalising and sampling the whole vocabulary take
    several ms per token (most of a small model's decode step; see bench/).
    """
    import torch

    k = sampling.top_k if 0 < sampling.top_k < scores.shape[-1] else 0
    if k:
        vals, idx = scores.topk(k, dim=-1)  # largest first
    elif sampling.top_p < 1.0:
        vals, idx = scores.sort(dim=-1, descending=True)
    else:
        return torch.multinomial(torch.softmax(scores / sampling.temperature, dim=-1), 1, generator=gen)
    vals = vals / sampling.temperature
    if sampling.top_p < 1.0:
        # TopP: drop the least likely tokens whose cumulative probability is <= 1 - top_p, keep >= 1
        ascending = vals.flip(-1)
        remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - sampling.top_p)
        remove[..., -1] = False
        vals = vals.masked_fill(remove.flip(-1), float("-inf"))
    choice = torch.multinomial(torch.softmax(vals, dim=-1), 1, generator=gen)
    return idx.gather(-1, choice)


def _accepts(model, arg: str) -> bool:
    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Detokenizer:
    """Incremental decoding: emit text only once it is whole (no half UTF-8 characters)."""

    def __init__(self, tokenizer, context_ids: list[int]):
        self.tok = tokenizer
        self.ids = list(context_ids)
        self.prefix = 0
        self.read = len(self.ids)

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=False)
        after = self.tok.decode(self.ids[self.prefix :], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        if self.read >= len(self.ids):
            return ""
        before = self.tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=False)
        after = self.tok.decode(self.ids[self.prefix :], skip_special_tokens=False)
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


class GenerationJob:
    """Runs ``ChatModel.stream`` on a worker thread, handing each event to ``sink``."""

    def __init__(self, chat: ChatModel, prompt, sampling: Sampling | None, sink: Sink):
        self.chat, self.prompt, self.sampling, self.sink = chat, prompt, sampling, sink
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="minigpt-generate", daemon=True)

    def start(self) -> "GenerationJob":
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.stop.set()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        for event in self.chat.stream(self.prompt, self.sampling, self.stop):
            self.sink(event)
