"""Conversation datasets: where conversations come from, and how they become training rows.

Sources (``--dataset``), each split a ``datasets.Dataset`` with a ``messages`` column (a list of
``{role, content}``, the OpenAI / Hugging Face convention):
  * ``chitchat``: the human-human chats of the ``chitchat-dataset`` package (MIT), offline: of its
    7,168 chats, the 4,018 with two speakers.  Consecutive messages by one sender form a turn
    (joined by newlines).  A fixed split by conversation, by its place in the file: every 20th
    from the 10th is test, every 20th from the 20th validation, the rest train (215 / 197 /
    3,605 chats).  The test split is for the final word only.
    The first speaker is the user and the second the assistant; ``assistant="both"`` (training's
    default) also trains each training chat with the roles swapped (its turns are then the ones
    learnt).  Validation and test always take the second speaker as the assistant.
  * a ``.jsonl`` / ``.parquet`` file (or a folder of them by split) whose rows hold ``messages``,
    and a hub dataset with a ``messages`` column (``engine.data.sources`` finds them).

``pack_rows`` takes each conversation rendered with the checkpoint's chat format
(``engine.data.chat_format``), cuts conversations longer than a row at turn boundaries (a turn longer
than a row is cut where it must), and packs the pieces into rows of ``block_size`` tokens by best
fit, the space left at a row's end padded and masked.  The loss mask (1 on the assistant's tokens and
their end of turn) travels with the ids.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from engine.data.chat_format import Renderer, check_messages, has_own_format, template_render
from engine.errors import DataError

CHITCHAT = "chitchat"
ASSISTANT_CHOICES = ("second", "both")
PACKING = "best-fit-2"  # in the packed cache's key: a new packing makes new rows
HOLD_OUT_FRACTION = 0.05  # conversations held out for validation when a source has no such split


def chitchat_path() -> Path:
    spec = importlib.util.find_spec("chitchat_dataset")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset.json" if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise DataError("the chitchat corpus needs the 'chitchat-dataset' package (pip install chitchat-dataset)")
    return path


def chitchat_split(index: int) -> str:
    """The fixed split of the ``index``-th conversation (in the file's order)."""
    return "validation" if index % 20 == 19 else "test" if index % 20 == 9 else "train"


def chitchat_turns(conversation: dict) -> list[str]:
    """A chitchat conversation's turns: each sender's consecutive messages, one per line."""
    turns: list[str] = []
    last = None
    for group in conversation["messages"]:
        for message in group:
            text = " ".join(message["text"].split())
            if not text:
                continue
            if message["sender"] == last:
                turns[-1] += "\n" + text
            else:
                turns.append(text)
                last = message["sender"]
    return turns


def as_messages(turns: list[str], first: str = "user") -> list[dict]:
    """Alternating turns as messages, the first spoken by ``first``."""
    other = "assistant" if first == "user" else "user"
    return [{"role": first if i % 2 == 0 else other, "content": t} for i, t in enumerate(turns)]


def chitchat_source(assistant: str = "both"):
    from engine.data.sources import TextSource, _quiet_datasets

    if assistant not in ASSISTANT_CHOICES:
        raise DataError(f"unknown assistant speaker '{assistant}': use {' or '.join(ASSISTANT_CHOICES)}")
    path = chitchat_path()
    with path.open(encoding="utf-8") as f:
        chats = json.load(f)
    rows: dict[str, list] = {"train": [], "validation": [], "test": []}
    for i, chat in enumerate(chats.values()):
        turns = chitchat_turns(chat)
        if len(turns) < 2:
            continue
        split = chitchat_split(i)
        rows[split].append(as_messages(turns))
        if split == "train" and assistant == "both":
            rows[split].append(as_messages(turns, first="assistant"))
    datasets = _quiet_datasets()
    splits = {s: datasets.Dataset.from_dict({"messages": r}) for s, r in rows.items()}
    return TextSource(
        name="chitchat (human-human chats)" + (", both speakers" if assistant == "both" else ""),
        spec=CHITCHAT,
        config=None,
        key=f"chitchat|{path.stat().st_size}|{assistant}",
        splits=splits,
        rows_are_lines=False,
        chat=True,
    )


def hold_out_conversations(splits: dict, notify=None) -> dict:
    """A validation split from the end of the training conversations (5%), when there is none.
    Fewer than 20 conversations (a few saved chats, corrected to fine-tune on) have no 5% to
    spare: all of them train, and validation scores those same conversations (the split is then
    the training one itself; ``notify`` says so)."""
    if "validation" in splits:
        return splits
    train = splits["train"]
    hold = int(len(train) * HOLD_OUT_FRACTION)
    if hold < 1:
        if not len(train):
            raise DataError("no conversations to train on")
        if notify:
            notify(f"only {len(train)} conversation{'s' if len(train) != 1 else ''}: all train, none held out "
                   "(validation scores the training conversations)")
        return dict(splits, validation=train)
    return dict(splits, train=train.select(range(len(train) - hold)), validation=train.select(range(len(train) - hold, len(train))))


def conversation_texts(source, split: str = "train", batch: int = 1000):
    """Every message's text, in batches (to train a tokenizer on)."""
    ds = source.splits[split]
    for start in range(0, len(ds), batch):
        rows = ds[start : start + batch]["messages"]
        # rows are checked when they are rendered (pack): a bad one is named there, not here
        yield [m["content"] for conv in rows if isinstance(conv, list) for m in conv if isinstance(m, dict) and isinstance(m.get("content"), str)]


# --- rendering and packing ----------------------------------------------------------------


def render_split(ds, tokenizer, label: str, batch: int = 512):
    """Every conversation of a split, rendered (``Rendered``), each row checked first."""
    renderer = Renderer(tokenizer) if has_own_format(tokenizer) else None
    for start in range(0, len(ds), batch):
        convs = [check_messages(m, f"{label}: row {start + i + 1}") for i, m in enumerate(ds[start : start + batch]["messages"])]
        if renderer is not None:
            yield from renderer.render_many(convs)
        else:
            for conv in convs:
                yield template_render(tokenizer, conv)


def pieces(rendered, block_size: int):
    """A rendered conversation cut into (ids, mask) pieces of at most ``block_size`` tokens, at
    turn boundaries where it can: whole turns stay together, a turn longer than a row is cut."""
    ids, mask = rendered.ids, rendered.mask
    bounds = sorted(set([0, *rendered.starts, len(ids)]))
    start = 0
    for end_i, end in enumerate(bounds[1:], 1):
        nxt = bounds[end_i + 1] if end_i + 1 < len(bounds) else None
        if nxt is not None and nxt - start <= block_size:
            continue  # the next turn still fits with this piece
        while end - start > block_size:  # one turn longer than a row
            yield ids[start : start + block_size], mask[start : start + block_size]
            start += block_size
        if end > start:
            yield ids[start:end], mask[start:end]
        start = end


def pack_rows(rendered_iter, block_size: int, pad_id: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pieces packed into rows of ``block_size`` by best fit, longest first (each piece goes to
    the row with the least room that still holds it), the room left at a row's end ``pad_id``,
    masked; then the rows in a fixed random order (so that the first rows, which an evaluation
    during training reads, are a fair sample).  Returns flat (ids, mask) streams, a whole
    number of rows long."""
    from bisect import bisect_left, insort

    cut = [(np.asarray(ids, dtype=dtype), np.asarray(mask, dtype=np.uint8)) for r in rendered_iter for ids, mask in pieces(r, block_size)]
    if not cut:
        return np.zeros(0, dtype=dtype), np.zeros(0, dtype=np.uint8)
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in sorted(range(len(cut)), key=lambda i: -len(cut[i][0])):
        n = len(cut[i][0])
        k = bisect_left(room, (n, -1))
        if k < len(room):
            left, row = room.pop(k)
            rows[row].append(i)
        else:
            left, row = block_size, len(rows)
            rows.append([i])
        if left - n:
            insort(room, (left - n, row))
    ids = np.full((len(rows), block_size), pad_id, dtype=dtype)
    mask = np.zeros((len(rows), block_size), dtype=np.uint8)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            piece_ids, piece_mask = cut[i]
            ids[r, at : at + len(piece_ids)] = piece_ids
            mask[r, at : at + len(piece_ids)] = piece_mask
            at += len(piece_ids)
    order = np.random.default_rng(seed).permutation(len(rows))
    return ids[order].reshape(-1), mask[order].reshape(-1)
