"""Conversations in SQLite (stdlib ``sqlite3``) at ``engine.store.paths.conversations_db()``."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    checkpoint TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    system_prompt TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    created TEXT NOT NULL,
    edited INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""

# Full-text search over every message (SQLite FTS5, an external-content index kept in step with
# ``messages`` by triggers, in the same file).
SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(content, content='messages', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
"""


def fts_query(text: str) -> str:
    """User words -> an FTS5 query: every word must appear, as a word or the start of one
    ("lion" finds "lions"; search as you type); quotes and operators are taken literally."""
    return " ".join('"' + w.replace('"', '""') + '"*' for w in text.split())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Conversation:
    id: int
    title: str
    checkpoint: str | None
    created: str
    updated: str
    messages: int = 0
    snippet: str = ""  # a search hit's context
    system_prompt: str | None = None  # sent before the turns (None: none)


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    stopped: bool = False
    checkpoint: str | None = None
    id: int | None = None  # the stored message's id, once stored
    edited: bool = False  # a reply the user wrote (a correction), not the model


class ConversationStore:
    """One SQLite file, shared safely by several app instances (WAL, a busy timeout).

    A damaged file is set aside (kept for the user) and a new one started; ``warning`` then
    says so, for the app to show.
    """

    def __init__(self, path: Path | None = None):
        if path is None:
            from engine.store.paths import conversations_db

            path = conversations_db()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.warning: str | None = None
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            from engine.store.atomic import set_aside

            kept = set_aside(self.path)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.unlink()
            self.warning = f"The conversation database was damaged ({exc}); started a new one, the old file is kept as {kept}"
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(SCHEMA)
            self._add_column(db, "conversations", "system_prompt", "TEXT")  # a database from before system prompts
            self._add_column(db, "messages", "edited", "INTEGER NOT NULL DEFAULT 0")  # from before corrections
            had_index = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone()
            db.executescript(SEARCH_SCHEMA)
            if not had_index:  # a database from before search: index what it holds
                db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def _add_column(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
        """Add a column an older database lacks (its rows get NULL there)."""
        def present() -> bool:
            return column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

        if present():
            return
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError:
            if not present():  # (else another app instance added it just now: fine)
                raise

    def close(self) -> None:
        self.db.close()

    # --- conversations ---
    def create(self, title: str, checkpoint: str | None, system_prompt: str | None = None) -> int:
        now = _now()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO conversations (title, checkpoint, created, updated, system_prompt) VALUES (?, ?, ?, ?, ?)",
                (title or "New chat", checkpoint, now, now, system_prompt or None),
            )
        return int(cur.lastrowid)

    def set_system_prompt(self, conversation_id: int, system_prompt: str | None) -> None:
        """The conversation's system prompt; empty or None: none."""
        with self.db:
            self.db.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (system_prompt or None, conversation_id))

    def list(self) -> list[Conversation]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.checkpoint, c.created, c.updated, COUNT(m.id), c.system_prompt FROM conversations c "
            "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated DESC, c.id DESC"
        ).fetchall()
        return [Conversation(*row[:6], system_prompt=row[6]) for row in rows]

    def search(self, text: str, limit: int = 200) -> list[Conversation]:
        """Conversations whose messages (or title) contain every word of ``text``, best first,
        each with a snippet of its best matching message."""
        query = fts_query(text)
        if not query:
            return self.list()
        hits = self.db.execute(
            "SELECT m.conversation_id, snippet(messages_fts, 0, '\u00bb', '\u00ab', '\u2026', 8) "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "WHERE messages_fts MATCH ? ORDER BY bm25(messages_fts) LIMIT 5000",
            (query,),
        ).fetchall()
        by_id = {c.id: c for c in self.list()}
        found: list[Conversation] = []
        for conversation_id, snippet in hits:  # best message first: keep each chat's best
            conv = by_id.pop(conversation_id, None)
            if conv is not None:
                conv.snippet = snippet
                found.append(conv)
                if len(found) >= limit:
                    return found
        words = text.lower().split()
        found += [c for c in by_id.values() if all(w in c.title.lower() for w in words)]  # titles too
        return found[:limit]

    def get(self, conversation_id: int) -> Conversation | None:
        row = self.db.execute(
            "SELECT id, title, checkpoint, created, updated, system_prompt FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return Conversation(*row[:5], system_prompt=row[5]) if row else None

    def rename(self, conversation_id: int, title: str) -> None:
        with self.db:
            self.db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- turns ---
    def add(self, conversation_id: int, turn: Turn) -> int:
        """Append a turn; returns its message id."""
        now = _now()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, stopped, checkpoint, created, edited) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, turn.role, turn.content, int(turn.stopped), turn.checkpoint, now, int(turn.edited)),
            )
            self.db.execute(
                "UPDATE conversations SET updated = ?, checkpoint = COALESCE(?, checkpoint) WHERE id = ?",
                (now, turn.checkpoint, conversation_id),
            )
        return int(cur.lastrowid)

    def remove_turn(self, message_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def turns(self, conversation_id: int) -> list[Turn]:
        rows = self.db.execute(
            "SELECT role, content, stopped, checkpoint, id, edited FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        return [Turn(role, content, bool(stopped), checkpoint, id_, bool(edited)) for role, content, stopped, checkpoint, id_, edited in rows]

    # --- export ---
    def to_markdown(self, conversation_id: int) -> str:
        conv = self.get(conversation_id)
        if conv is None:
            raise KeyError(conversation_id)
        lines = [f"# {conv.title}", "", f"*Checkpoint: {conv.checkpoint or 'none'} \u00b7 started {conv.created}*", ""]
        if conv.system_prompt:
            lines += ["**System:**", "", conv.system_prompt.rstrip(), ""]
        for turn in self.turns(conversation_id):
            who = "You" if turn.role == "user" else f"Model ({turn.checkpoint})" if turn.checkpoint else "Model"
            lines += [f"**{who}:**", "", turn.content.rstrip() or "*(empty)*"]
            if turn.stopped:
                lines += ["", "*(stopped)*"]
            lines.append("")
        return "\n".join(lines)

    def default_export_path(self, conversation_id: int) -> Path:
        conv = self.get(conversation_id)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", (conv.title if conv else "chat")).strip("-").lower()[:40] or "chat"
        return self.path.parent / "exports" / f"{conversation_id}-{slug}.md"

    def export(self, conversation_id: int, path: Path, overwrite: bool = False) -> Path:
        """Write the Markdown; raises FileExistsError unless ``overwrite``."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_markdown(conversation_id)
        mode = "w" if overwrite else "x"
        with open(path, mode, encoding="utf-8") as f:
            f.write(text)
        return path
