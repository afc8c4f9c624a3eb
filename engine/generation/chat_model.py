"""Token-by-token generation with a KV cache.

A hand-written decode loop (one forward per token over the cache, ``logits_to_keep=1`` on the
prompt) with the semantics of transformers' logits processors for repetition penalty,
temperature, top-k and top-p (tests/test_generate.py checks them against the processors).  It
yields typed events; ``GenerationJob`` runs it on a worker thread.  Cancelling (``stop``
event) takes effect before the next token.  The prompt is never echoed.  ``start_process``
moves the decoding to a child process (engine/generation/decode_process.py), as the app does.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from engine.errors import CheckpointError
from engine.events import GenerationEvent, GenerationFailed, GenerationFinished, GenerationStarted, Sink, TokenChoice, TokenGenerated
from engine.store.record import CheckpointRecord
from engine.store.settings import Sampling

DECODE_CHOICES = ("auto", "fast", "reference")
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
    record: CheckpointRecord | None = None  # a checkpoint's record (None: a model folder or hub id)
    # Which decode loop runs the model: "fast" (engine/generation/fast_decode.py, GPT-2 models), "reference"
    # (the transformers forward with its KV cache), or "auto": fast once ``warm_up`` has checked
    # it against the reference, the reference until then and where fast is unavailable.
    # MINIGPT_DECODE sets the default.
    decode: str = field(default_factory=lambda: os.environ.get("MINIGPT_DECODE", "auto") or "auto")

    def __post_init__(self):
        if self.decode not in DECODE_CHOICES:
            raise CheckpointError(f"unknown decode path '{self.decode}': use {', '.join(DECODE_CHOICES)}")
        self._fast = None  # the GPT2FastDecoder, once built
        self._fast_ready = False  # warm_up passed its check
        self._fast_problem: str | None = None  # why there is no fast path (None: not known yet / none)
        self._fast_lock = threading.Lock()  # one reply (or warm-up) at a time on the decoder's cache
        self._process = None  # a DecodeProcess decoding replies apart from this one (start_process)
        self.process_note = ""  # why replies do not decode in a child process, when one was asked for
        self.stop_ids = stop_ids_of(self.model, self.tokenizer)

    @classmethod
    def from_checkpoint(cls, name: str, store=None, device: str = "auto") -> "ChatModel":
        from engine.store.checkpoints import CheckpointStore
        from engine.model import pick_device

        from engine.model import to_inference_dtype

        dev, _ = pick_device(device)
        model, tokenizer, info = (store or CheckpointStore()).load(name, dev)
        return cls(model=model, tokenizer=tokenizer, name=name, device=dev, dtype=to_inference_dtype(model, dev), record=info.record)

    @classmethod
    def from_folder(cls, path, name: str | None = None, device: str = "auto") -> "ChatModel":
        """A model folder outside the store (e.g. a snapshot in the local Hugging Face cache)."""
        from pathlib import Path

        from engine.store.checkpoints import load_model_dir, safetensors_problem
        from engine.model import pick_device

        path = Path(path)
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise CheckpointError(f"{path} has no safetensors weights")
        for w in weights:
            problem = safetensors_problem(w)
            if problem:
                raise CheckpointError(f"{path.name}: {problem}")
        from engine.model import to_inference_dtype

        dev, _ = pick_device(device)
        model, tokenizer = load_model_dir(path, dev)
        return cls(model=model, tokenizer=tokenizer, name=name or path.name, device=dev, dtype=to_inference_dtype(model, dev))

    # --- prompts ---
    @property
    def n_positions(self) -> int:
        from engine.model import n_positions

        return n_positions(self.model)

    @property
    def is_chat(self) -> bool:
        """Whether the model has a chat template (prompts are rendered turns, replies end at
        the end of the turn)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids for a conversation: the chat template when the tokenizer has one, else a
        plain continuation prompt (the turns' text, one paragraph each)."""
        tok = self.tokenizer
        if self.is_chat:
            out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if hasattr(out, "get") and not isinstance(out, list):
                out = out.get("input_ids", out)
            if out and isinstance(out[0], list):
                out = out[0]
            return list(out)
        text = "\n\n".join(m["content"] for m in messages if m.get("content"))
        return tok(text, add_special_tokens=False)["input_ids"]

    def fit_chat(self, messages: list[dict], max_new_tokens: int) -> tuple[list[int], int]:
        """``encode_chat`` of the most recent turns that leave room for the reply in the window:
        the oldest turns (never a system prompt, never the last message) are left out whole.
        Returns (ids, turns left out).  ``stream`` then needs to cut nothing, unless the last
        message alone is too long."""
        budget = prompt_budget(self.n_positions, max_new_tokens)
        system = [m for m in messages[:1] if m.get("role") == "system"]
        turns = messages[len(system):]
        dropped = 0
        ids = self.encode_chat(messages)
        while len(ids) > budget and len(turns) - dropped > 1:
            dropped += 1
            ids = self.encode_chat(system + turns[dropped:])
        return ids, dropped

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- generation ---
    def stream(
        self,
        prompt: str | list[int],
        sampling: Sampling | None = None,
        stop: threading.Event | None = None,
        details: bool = False,
    ) -> Iterator[GenerationEvent]:
        """Yield GenerationStarted, TokenGenerated..., then GenerationFinished (or GenerationFailed).

        ``details``: each TokenGenerated also carries, per token, the probability the model gave
        it and its top-10 alternatives (from the logits the step computed anyway: a softmax and
        a top-10 over the vocabulary, no extra forward pass)."""
        try:
            sampling, stop = (sampling or Sampling()).validated(), stop or threading.Event()
            process = self._process
            if process is not None and process.ready and not process.busy:
                yield from process.stream(prompt, sampling, stop, details)  # the child encodes it
            else:
                yield from self._stream(prompt, sampling, stop, details)
        except Exception as exc:  # a model that fails mid-reply must not take the app down
            yield GenerationFailed(error=f"{type(exc).__name__}: {exc}".splitlines()[0])

    def generate_text(self, prompt: str | list[int], sampling: Sampling | None = None) -> str:
        for event in self.stream(prompt, sampling):
            if isinstance(event, GenerationFinished):
                return event.text
            if isinstance(event, GenerationFailed):
                raise CheckpointError(event.error)
        return ""

    # --- a decode process ---
    def start_process(self, source: tuple[str, str]) -> bool:
        """Decode replies from now on in a child process that loads ``source`` (``("checkpoint",
        name)`` or ``("folder", path)``, what this model was loaded from): the UI's work then
        never stalls a reply (engine/generation/decode_process.py).  Blocks until the child is ready (call
        it from a worker); replies meanwhile, and for good if it fails, decode here.  CPU only.
        True when the process took over; ``process_note`` says why not otherwise."""
        from engine.generation.decode_process import DecodeProcess

        if self.device != "cpu":
            self.process_note = "not on " + self.device
            return False
        process = DecodeProcess(source, decode=self.decode)
        if process.start():
            self.close_process()
            self._process = process
            self.process_note = ""
            return True
        self.process_note = process.problem or "failed"
        return False

    def close_process(self) -> None:
        """Back to decoding in this process (ends the child)."""
        process, self._process = self._process, None
        if process is not None:
            process.close()

    @property
    def in_child_process(self) -> bool:
        """Whether replies decode in a child process now."""
        return self._process is not None and self._process.ready

    # --- which decode path ---
    @property
    def decode_path(self) -> str:
        """The path the next reply takes: "fast" or "reference"."""
        if self.in_child_process:
            return "fast" if self._process.note == "fast" else "reference"
        if self.decode == "reference" or self._fast_unavailable() is not None:
            return "reference"
        if self.decode == "fast" or self._fast_ready:
            return "fast"
        return "reference"

    @property
    def decode_note(self) -> str:
        """A few words on the path, for a status line: "fast", "reference (why)"."""
        if self.in_child_process:
            return self._process.note
        path = self.decode_path
        if path == "fast":
            return "fast"
        if self.decode == "reference":
            return "reference (chosen)"
        problem = self._fast_unavailable()
        if problem:
            return f"reference ({problem})"
        return "reference (fast path warming up)"

    def _fast_unavailable(self) -> str | None:
        if self._fast_problem is not None:
            return self._fast_problem
        from engine.generation.fast_decode import unsupported_reason

        return unsupported_reason(self.model)

    def _fast_decoder(self):
        """The fast decoder for the model as it is now (built, or rebuilt when the model's
        weights were moved or replaced), or None where the model has no fast path."""
        if self._fast_unavailable() is not None:
            return None
        from engine.generation.fast_decode import make_decoder

        cache_dtype = self._cache_dtype()
        if self._fast is None or not self._fast.matches(self.model, cache_dtype):
            self._fast = make_decoder(self.model, cache_dtype=cache_dtype)
        return self._fast

    def _cache_dtype(self):
        import torch

        return torch.bfloat16 if self.dtype == "bf16" else None

    def warm_up(self) -> str:
        """Build the fast decoder and check it against the reference forward (a prefill and two
        steps, logits within float tolerance); from then on "auto" uses it.  Runs the first
        passes, so the first reply pays no allocation costs.  Call it from a worker thread after
        a model loads: replies meanwhile take the reference path.  Returns ``decode_note``."""
        import torch

        from engine.model import autocast

        if self.decode == "reference" or self._fast_unavailable() is not None or self._fast_ready:
            return self.decode_note
        with self._fast_lock:
            try:
                dec = self._fast_decoder()
                if dec is None:
                    return self.decode_note
                n = max(2, min(8, dec.ctx - 2))
                ids = torch.arange(n, device=self.device).remainder(self.model.config.vocab_size).view(1, n)
                with torch.inference_mode(), autocast(self.device, self.dtype), _one_cpu_thread(self.device):
                    ref = _ReferenceRunner(self)
                    head = ref.head  # the same LM head on both sides (a bf16 copy on CPUs with fast bf16)
                    got, want = [dec.prefill(ids, head)], [ref.prefill(ids)]
                    for token in (1, 2):
                        got.append(dec.step(token, head))
                        want.append(ref.step(torch.tensor([[token]], device=self.device)))
                    for g, w in zip(got, want):
                        g, w = g.float(), w.float()
                        tol = 2e-2 if self.dtype == "bf16" else 1e-3
                        if not torch.allclose(g, w, rtol=tol, atol=tol * max(1.0, float(w.abs().max()))):
                            self._fast_problem = "fast path disagreed with the model"
                            return self.decode_note
            except Exception as exc:  # any failure here leaves the reference path in use
                self._fast_problem = f"fast path failed: {type(exc).__name__}"
                return self.decode_note
            self._fast_ready = True
        return self.decode_note

    def _bf16_head(self):
        """A bf16 copy of a GPT-2 LM head, on CPUs with native bf16 (AVX512-BF16/AMX), else None.

        The head is most of a small model's decode step: 128 x 50,257 weights read for every
        token.  In bf16 that matrix-vector product takes ~0.6 ms instead of ~3.3 ms in fp32 (one
        core, bench/); the body stays in the model's precision.  The copy is remade when the
        weights change (training samples call this between optimizer steps).
        """
        import torch

        from engine.model import cpu_has_fast_bf16

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

    def _stream(self, prompt, sampling: Sampling, stop: threading.Event, details: bool = False) -> Iterator[GenerationEvent]:
        import torch

        from engine.model import autocast

        t0 = time.perf_counter()
        tok = self.tokenizer
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            ids = [tok.eos_token_id if tok.eos_token_id is not None else 0]
        ctx = self.n_positions
        max_new = sampling.max_new_tokens
        budget = prompt_budget(ctx, max_new)
        truncated = max(0, len(ids) - budget)
        ids = ids[truncated:]
        yield GenerationStarted(prompt_tokens=len(ids), truncated_tokens=truncated, max_new_tokens=max_new)

        penalty = float(sampling.repetition_penalty)
        penalized = penalty != 1.0
        greedy = sampling.temperature == 0
        # temperature, top-k and top-p: _sample (the warpers' semantics on the k best logits only)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(sampling.seed if sampling.seed is not None else int(time.time_ns() % (2**63)))
        stop_ids = self.stop_ids
        # the repetition penalty never touches the stop ids: a chat prompt holds an end of turn
        # after every turn, and penalising it would keep replies from ending
        kept = torch.tensor(stop_ids, dtype=torch.long, device=self.device).view(1, -1) if penalized and stop_ids else None
        stop_token = None

        # The context in the window (prompt + reply so far): at most ctx tokens, and a full window
        # slides to its last half.  The repetition penalty reads it from one preallocated buffer.
        window = list(ids)
        if penalized:
            buf = torch.empty((1, ctx), dtype=torch.long, device=self.device)
            buf[0, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        detok = _Detokenizer(tok, ids[-_DETOK_CONTEXT:])
        pieces: list[str] = []
        choices: list[TokenChoice] = []  # (details) of the tokens since the last piece
        new_tokens = 0
        first_at = last_at = None
        reason = "length"
        fast = self.decode_path == "fast" and self._fast_lock.acquire(blocking=False)
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype), _one_cpu_thread(self.device):
                runner = _FastRunner(self) if fast else _ReferenceRunner(self)
                if stop.is_set():
                    reason, max_new = "cancelled", 0
                else:
                    last = runner.prefill(torch.tensor([window], dtype=torch.long, device=self.device))
                while new_tokens < max_new:
                    scores = last.float()
                    if penalized:
                        scores = _penalize(scores.clone(), buf[:, : len(window)], penalty, kept)
                    next_id = scores.argmax(dim=-1, keepdim=True) if greedy else _sample(scores, sampling, gen)
                    token = int(next_id)
                    if token in stop_ids:
                        reason, stop_token = "eos", token
                        break
                    if details:
                        choices.append(_choice(last, token))
                    new_tokens += 1
                    if penalized:
                        buf[0, len(window)] = token
                    window.append(token)
                    piece = detok.push(token)
                    now = time.perf_counter()
                    if piece:
                        if first_at is None:
                            first_at = now
                        last_at = now
                        pieces.append(piece)
                        yield TokenGenerated(text=piece, index=new_tokens - 1, elapsed_s=now - t0, choices=tuple(choices))
                        choices.clear()
                    if new_tokens >= max_new:
                        break
                    if stop.is_set():  # checked before each forward: cancelling costs no extra token
                        reason = "cancelled"
                        break
                    if len(window) >= ctx:
                        # The window is full: slide it, re-reading the last half (absolute
                        # positions cannot be shifted inside the cache).
                        window = window[-(ctx // 2) :]
                        context = torch.tensor([window], dtype=torch.long, device=self.device)
                        if penalized:
                            buf[:, : len(window)] = context
                        last = runner.prefill(context)
                    else:
                        last = runner.step(next_id, token)
        finally:
            if fast:
                self._fast_lock.release()
        tail = detok.flush()
        if tail:
            pieces.append(tail)
            if first_at is None:
                first_at = time.perf_counter()
            yield TokenGenerated(text=tail, index=new_tokens, elapsed_s=time.perf_counter() - t0, choices=tuple(choices))
        end = time.perf_counter()
        rate = (new_tokens - 1) / (last_at - first_at) if first_at and last_at and last_at > first_at and new_tokens > 1 else None
        yield GenerationFinished(
            text="".join(pieces),
            new_tokens=new_tokens,
            stop_reason=reason,
            time_to_first_token_s=(first_at - t0) if first_at else None,
            tokens_per_s=rate,
            elapsed_s=end - t0,
            stop_token_id=stop_token,
        )


def prompt_budget(ctx: int, max_new_tokens: int) -> int:
    """Prompt tokens kept in a window of ``ctx``: room for the reply, but never less than half
    the window (long replies slide the window instead, see ``ChatModel._stream``)."""
    return max(1, ctx - min(max_new_tokens, ctx // 2))


def stop_ids_of(model, tokenizer) -> list[int]:
    """The ids that end a reply: the model's ``generation_config.eos_token_id`` (one id or a
    list: a chat checkpoint saves its end of turn and eos there), then the tokenizer's eos."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and eos not in ids:
        ids.append(eos)
    return [int(i) for i in ids]


class _ReferenceRunner:
    """The transformers forward over its own KV cache (``DynamicCache``), one token a step."""

    def __init__(self, chat: ChatModel):
        model = chat.model
        self.model = model
        self.head = chat._bf16_head()  # the LM head in bf16 on CPUs with fast bf16, else None
        self.keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        self.cache_arg = "cache" if _accepts(model, "cache") else "past_key_values"  # renamed in transformers 5.2x
        self.past = None

    def prefill(self, ids):
        """Logits of the last position of ``ids`` ([1, T]), from an empty cache."""
        self.past = None
        return self._forward(ids)

    def step(self, next_id, token: int | None = None):
        """Logits after one more token (``next_id``: [1, 1])."""
        return self._forward(next_id)

    def _forward(self, step_input):
        import torch

        model = self.model
        if self.head is not None:  # the body, then the LM head on the last position in bf16
            out = model.base_model(input_ids=step_input, use_cache=True, **{self.cache_arg: self.past})
            last = torch.nn.functional.linear(out.last_hidden_state[:, -1, :].to(self.head.dtype), self.head)
        else:
            out = model(input_ids=step_input, use_cache=True, **{self.cache_arg: self.past}, **self.keep)
            last = out.logits[:, -1, :]
        past = getattr(out, "cache", None)
        self.past = past if past is not None else getattr(out, "past_key_values", None)
        return last


class _FastRunner:
    """engine/generation/fast_decode.py's decoder behind the same two calls."""

    def __init__(self, chat: ChatModel):
        self.dec = chat._fast_decoder()
        self.head = chat._bf16_head()

    def prefill(self, ids):
        return self.dec.prefill(ids, self.head)

    def step(self, next_id, token: int):
        return self.dec.step(token, self.head)


def _one_cpu_thread(device: str):
    """Decode on one intra-op thread without changing training's threads (engine/generation/threads.py)."""
    from engine.generation.threads import one_decode_thread

    return one_decode_thread(device)


def _choice(logits, token: int) -> TokenChoice:
    """The model's view of one step: p(token) and the top 10, from the step's raw logits."""
    logp = logits.float()[0].log_softmax(-1)
    top_p, top_i = logp.topk(min(10, logp.shape[-1]))
    return TokenChoice(
        token_id=token,
        prob=float(logp[token].exp()),
        alternatives=tuple(zip(top_i.tolist(), top_p.exp().tolist())),
    )


def _penalize(scores, ids, penalty: float, kept=None):
    """transformers' ``RepetitionPenaltyLogitsProcessor`` in place on ``scores`` ([1, vocab]):
    each logit of a token in ``ids`` ([1, n]) divided by ``penalty`` where positive, multiplied
    where negative.  The processor's general version (prompt masks, padding for ids outside the
    vocabulary, a new tensor) cost 160 us a token; this is three small ops.  The ids in ``kept``
    ([1, m], the stop ids) keep their logits."""
    import torch

    raw = scores.gather(1, kept) if kept is not None else None
    seen = scores.gather(1, ids)
    scores.scatter_(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))
    return scores if raw is None else scores.scatter_(1, kept, raw)


def _sample(scores, sampling: Sampling, gen):
    """One token id ([1, 1]) drawn from ``_distribution``."""
    probs, idx = _distribution(scores, sampling)
    choice = _multinomial(probs, gen)
    return choice if idx is None else idx.gather(-1, choice)


def _multinomial(probs, gen):
    """``torch.multinomial(probs, 1, generator=gen)`` without its input checks: for one sample
    it draws q ~ Exp(1) per entry and takes argmax(p / q), as here, after five reductions that
    check the input (29 us instead of 8.5 for 50 entries).  The same draws from the same
    generator: the same tokens (tests/test_generate.py).  ``probs`` comes from a softmax."""
    import torch

    q = torch.empty_like(probs).exponential_(1, generator=gen)
    return torch.argmax(probs / q, dim=-1, keepdim=True)


def _distribution(scores, sampling: Sampling):
    """What transformers' Temperature -> TopK -> TopP warpers leave of ``scores`` ([1, vocab]):
    ``(probs, idx)``, the (unnormalised) probabilities of the tokens ``idx`` ([1, n], most likely
    first), or ``idx`` None when every token stays.

    Works on the k best logits only: a top-k over the vocabulary and a softmax over k values,
    where masking, normalising and sampling the whole vocabulary take several ms per token.
    Top-p keeps the most likely tokens until the ones left out hold at most 1 - top_p of the
    probability (the warper's rule, summed from the least likely up as it does; at least one
    token stays).
    """
    import torch

    k = sampling.top_k if 0 < sampling.top_k < scores.shape[-1] else 0
    if k:
        vals, idx = scores.topk(k, dim=-1)  # largest first
    elif sampling.top_p < 1.0:
        vals, idx = scores.sort(dim=-1, descending=True)
    else:
        return torch.softmax(scores / sampling.temperature, dim=-1), None
    probs = torch.softmax(vals.div_(sampling.temperature), dim=-1)
    if sampling.top_p < 1.0:
        # the probability of each token and all less likely ones, summed from the least likely up
        tail = probs.flip(-1).cumsum_(-1).flip(-1)[0].tolist()
        left_out = 1 - sampling.top_p
        kept = sum(1 for t in tail if t > left_out) or 1  # tail falls with rank: a prefix stays
        probs, idx = probs[:, :kept], idx[:, :kept]
    return probs, idx


def _accepts(model, arg: str) -> bool:
    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Detokenizer:
    """Incremental decoding: emit text only once it is whole (no half UTF-8 characters).

    Fast tokenizers use ``tokenizers.decoders.DecodeStream`` (one Rust call per token, primed
    with the last tokens of the context so a word's leading space comes out right); others
    decode the recent ids twice per token and emit the difference.
    """

    def __init__(self, tokenizer, context_ids: list[int]):
        self.tok = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.pending: list[int] = []  # ids not yet emitted as text
        if self.backend is not None:
            from tokenizers.decoders import DecodeStream

            self.stream = DecodeStream(ids=list(context_ids), skip_special_tokens=False)
        self.ids = list(context_ids)
        self.prefix = 0
        self.read = len(self.ids)

    def push(self, token: int) -> str:
        if self.backend is not None:
            self.pending.append(token)
            piece = self.stream.step(self.backend, token)
            if piece:
                self.pending.clear()
            return piece or ""
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=False)
        after = self.tok.decode(self.ids[self.prefix :], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is left when the reply ends inside a character (with replacement characters)."""
        if self.backend is not None:
            tail = self.backend.decode(self.pending, skip_special_tokens=False) if self.pending else ""
            self.pending.clear()
            return tail
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
