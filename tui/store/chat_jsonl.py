"""Saved chats as training data: JSONL in the ``messages`` format, out of and into the store.

One conversation a line, the format ``minigpt-tui train --dataset FILE`` trains on (README,
"Datasets"; ``engine.data.conversations``)::

    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}],
     "title": "hi", "checkpoint": "seed-chitchat-...", "edited": [false, false, true], "stopped": [false, false, false]}

``messages`` is the chat's shown path (``ConversationStore.turns``), after its system prompt as a
leading system message when it has one.  The other keys are the app's own, which training ignores
(``engine.data.sources`` keeps the ``messages`` column only); import reads them back:
``edited`` / ``stopped`` say, one flag per message, which replies the user wrote (a correction)
and which were stopped while streaming.  Each has the same JSON type on every row, never null (a
``checkpoint`` without one is ``""``): the ``datasets`` JSON reader infers a column's type from
the first 10 MB of a file and fails on a later row whose type differs.

Stopped replies are exported as they were kept (flagged in ``stopped``), so they train too.  A
chat without any reply has nothing to learn from (training refuses such a row): it is left out
of an export and counted.

Only the store's public API is used (``list``, ``get``, ``turns``, ``create``, ``add``).
Imported lazily (the saved-chats dialog, the training form): nothing here runs before the first frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.chat_format import check_messages
from engine.errors import DataError
from engine.store.atomic import write_bytes

from tui.store.conversations import ConversationStore, Turn
from tui.safe import one_line

SAVED_CHATS_FILE = "saved-chats.jsonl"  # the export of every chat: its default name, and the training form's copy
ROW_KEYS = ("title", "checkpoint", "edited", "stopped")  # the app's keys beside "messages"


class ChatFileError(ValueError):
    """A one-line reason why a file (or a chat) cannot be exported or imported."""


@dataclass
class Exported:
    path: Path
    chats: int  # rows written
    left_out: list[str] = field(default_factory=list)  # titles of chats without a reply

    def summary(self) -> str:
        n = self.chats
        text = f"Exported {n} chat{'s' if n != 1 else ''} to {self.path}"
        if self.left_out:
            k = len(self.left_out)
            text += f" ({k} without a reply left out)"
        return text


@dataclass
class Imported:
    path: Path
    chats: int = 0  # conversations created
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        n = self.chats
        text = f"Imported {n} chat{'s' if n != 1 else ''} from {self.path.name}"
        skipped = sum(self.skipped.values())
        if skipped:
            text += f"; skipped {skipped} ({', '.join(f'{reason}: {k}' for reason, k in self.skipped.items())})"
        return text


# --- export ---------------------------------------------------------------------------------


def conversation_row(store: ConversationStore, conversation_id: int) -> dict | None:
    """A saved chat as a JSONL row (its shown path); None when it has no reply to learn from."""
    conv = store.get(conversation_id)
    if conv is None:
        raise KeyError(conversation_id)
    turns = store.turns(conversation_id)
    if not any(t.role == "assistant" for t in turns):
        return None
    messages, edited, stopped = [], [], []
    if conv.system_prompt:
        messages.append({"role": "system", "content": conv.system_prompt})
        edited.append(False)
        stopped.append(False)
    for t in turns:
        messages.append({"role": t.role, "content": t.content})
        edited.append(bool(t.edited))
        stopped.append(bool(t.stopped))
    return {"messages": messages, "title": conv.title, "checkpoint": conv.checkpoint or "", "edited": edited, "stopped": stopped}


def export_jsonl(store: ConversationStore, conversation_ids: list[int] | None, path: Path, overwrite: bool = False) -> Exported:
    """Write these chats (None: every saved chat, most recently updated first) to ``path``,
    one a line, atomically.  FileExistsError unless ``overwrite``; ChatFileError when none has a
    reply (nothing would train)."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    ids = [c.id for c in store.list()] if conversation_ids is None else list(conversation_ids)
    rows, left_out = [], []
    for cid in ids:
        row = conversation_row(store, cid)
        if row is None:
            conv = store.get(cid)
            left_out.append(conv.title if conv else str(cid))
        else:
            rows.append(row)
    if not rows:
        if conversation_ids is not None and len(ids) == 1:
            raise ChatFileError(f"'{one_line(left_out[0], 40)}' has no reply yet: nothing to train on")
        raise ChatFileError("no saved chat has a reply yet: nothing to train on" if ids else "no saved chats yet")
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_bytes(path, text.encode("utf-8"))
    return Exported(path=path, chats=len(rows), left_out=left_out)


def default_jsonl_path(store: ConversationStore, conversation_id: int | None = None) -> Path:
    """Where an export goes unless the user says otherwise: the Markdown export's folder and
    name (``exports/12-title.jsonl``), or ``exports/saved-chats.jsonl`` for every chat."""
    if conversation_id is None:
        return store.path.parent / "exports" / SAVED_CHATS_FILE
    return store.default_export_path(conversation_id).with_suffix(".jsonl")


def training_export_path(store: ConversationStore) -> Path:
    """The training form's copy of every saved chat (``saved-chats`` as its dataset): beside the
    conversation database, rewritten at each run's start."""
    return store.path.parent / SAVED_CHATS_FILE


# --- import ---------------------------------------------------------------------------------


@dataclass
class ChatRow:
    """One line of a chat file, checked: what a saved chat holds."""

    line: int
    title: str
    checkpoint: str | None
    system_prompt: str | None
    turns: list[Turn]
    problem: str | None = None  # why the saved chats cannot hold it (the row is skipped)


def _flags(row: dict, key: str, n: int, where: str) -> list[bool]:
    value = row.get(key)
    if value is None:
        return [False] * n
    if not isinstance(value, list) or len(value) != n or not all(isinstance(v, bool) for v in value):
        raise ChatFileError(f"{where}: '{key}' must be a list of true/false, one per message ({n})")
    return value


def parse_row(text: str, where: str, line: int) -> ChatRow:
    """A JSONL line as a chat; ChatFileError (one line, naming ``where``) when it is not one."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChatFileError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ChatFileError(f"{where}: not a JSON object (a chat is {{\"messages\": [...]}})")
    if "messages" not in row:
        keys = ", ".join(sorted(map(str, row))[:6]) or "none"
        raise ChatFileError(f"{where}: no 'messages' (its keys: {keys}); a chat is {{\"messages\": [{{\"role\": ..., \"content\": ...}}]}}")
    try:  # training's own check of a row (a chat without a reply can still be saved)
        messages = check_messages(row["messages"], where, need_reply=False)
    except DataError as exc:
        raise ChatFileError(str(exc)) from None
    for key in ("title", "checkpoint"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ChatFileError(f"{where}: '{key}' must be text")
    edited = _flags(row, "edited", len(messages), where)
    stopped = _flags(row, "stopped", len(messages), where)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    first = 1 if messages[0]["role"] == "system" else 0
    problem = None
    if any(m["role"] == "system" for m in messages[first:]):
        problem = "a system message after the start"
    elif first == len(messages):
        problem = "no user or assistant message"
    turns = [
        Turn(m["role"], m["content"], stopped=stopped[i] and m["role"] == "assistant", checkpoint=None, edited=edited[i] and m["role"] == "assistant")
        for i, m in enumerate(messages)
        if i >= first
    ]
    checkpoint = row.get("checkpoint") or None
    for t in turns:
        if t.role == "assistant" and not t.edited:
            t.checkpoint = checkpoint  # the model that wrote it, as far as the file says
    first_user = next((t.content for t in turns if t.role == "user" and t.content.strip()), "")
    title = (row.get("title") or "").strip() or one_line(first_user, 60) or "Imported chat"
    return ChatRow(line=line, title=title, checkpoint=checkpoint, system_prompt=system or None, turns=turns, problem=problem)


def read_jsonl(path: Path) -> list[ChatRow]:
    """Every chat of a JSONL file (blank lines aside), each checked; ChatFileError for the first
    line that is not a chat (nothing is imported from a bad file), or a file with none."""
    path = Path(path).expanduser()
    data = path.read_bytes()  # OSError: not found, a folder, unreadable
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ChatFileError(f"{path.name} is not UTF-8 text (bad byte at offset {exc.start})") from None
    rows = [parse_row(line, f"{path.name} line {n}", n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise ChatFileError(f"{path.name} holds no chats (an empty file)")
    return rows


def _key(system_prompt: str | None, turns) -> tuple:
    return (system_prompt or None, tuple((t.role, t.content) for t in turns))


def import_jsonl(store: ConversationStore, path: Path) -> Imported:
    """Every chat of ``path`` into saved chats: its title (else its first user message), system
    prompt, checkpoint and turns, with the replies the user wrote or stopped marked so.  A chat
    already saved (same system prompt and messages) is skipped, as is one the saved chats cannot
    hold (a system message after the start, no user or assistant message)."""
    path = Path(path).expanduser()
    rows = read_jsonl(path)
    seen = {_key(c.system_prompt, store.turns(c.id)) for c in store.list()}
    result = Imported(path=path)
    for row in rows:
        key = _key(row.system_prompt, row.turns)
        reason = row.problem or ("already saved" if key in seen else None)
        if reason:
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
            continue
        cid = store.create(row.title, row.checkpoint, row.system_prompt)
        for turn in row.turns:
            store.add(cid, turn)
        seen.add(key)
        result.chats += 1
        result.ids.append(cid)
    return result
