"""Conversations in SQLite (stdlib ``sqlite3``) at ``engine.store.paths.conversations_db()``."""

from __future__ import annotations

import json
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
    system_prompt TEXT,
    leaf_id INTEGER,
    sampling TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    created TEXT NOT NULL,
    edited INTEGER NOT NULL DEFAULT 0,
    parent_id INTEGER,
    shown_child INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""

# The messages of a conversation form a tree: each message's parent is the turn it follows
# (NULL: a first turn).  An edited message or a regenerated reply is a new sibling, so every
# version is kept; ``conversations.leaf_id`` is the last message of the path shown, and each
# message's ``shown_child`` the version after it last shown (where switching back returns).
SCHEMA_VERSION = 2  # (PRAGMA user_version) 2: the message tree; before it, a list by id

# The path from a conversation's leaf up to its first turn, with each message's place among
# its siblings (versions): (id, parent_id, role, content, stopped, checkpoint, edited, version, versions).
PATH_QUERY = """
WITH RECURSIVE path(id, depth) AS (
    SELECT leaf_id, 0 FROM conversations WHERE id = :cid AND leaf_id IS NOT NULL
    UNION ALL
    SELECT m.parent_id, path.depth + 1 FROM path JOIN messages m ON m.id = path.id WHERE m.parent_id IS NOT NULL
)
SELECT m.id, m.parent_id, m.role, m.content, m.stopped, m.checkpoint, m.edited,
    (SELECT COUNT(*) FROM messages s WHERE s.conversation_id = m.conversation_id AND s.parent_id IS m.parent_id AND s.id <= m.id),
    (SELECT COUNT(*) FROM messages s WHERE s.conversation_id = m.conversation_id AND s.parent_id IS m.parent_id)
FROM path JOIN messages m ON m.id = path.id ORDER BY path.depth DESC
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


def _json(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _from_json(text: str | None) -> dict | None:
    """A stored JSON object, or None (none stored, or not readable: the defaults apply)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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
    hit: int | None = None  # a search hit's message (opening the chat shows its branch)
    sampling: dict | None = None  # the chat's own sampling settings (None: the defaults)


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    stopped: bool = False
    checkpoint: str | None = None
    id: int | None = None  # the stored message's id, once stored
    edited: bool = False  # a reply the user wrote (a correction), not the model
    parent_id: int | None = None  # the turn it follows (None: a first turn)
    version: int = 1  # its place among the versions of this turn (1-based) ...
    versions: int = 1  # ... and how many there are


LEAF = object()  # ``add``'s default parent: the last turn shown


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
            self._add_column(db, "conversations", "sampling", "TEXT")  # from before settings per chat
            self._migrate_to_tree(db)
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

    @classmethod
    def _migrate_to_tree(cls, db: sqlite3.Connection) -> None:
        """A database from before branches held each chat as a list (by id): each message's
        parent becomes the one before it, and the shown path ends at the last.  Once, in one
        transaction (another app instance may be opening the same file)."""
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        db.commit()
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                cls._add_column(db, "messages", "parent_id", "INTEGER")
                cls._add_column(db, "conversations", "leaf_id", "INTEGER")
                cls._add_column(db, "messages", "shown_child", "INTEGER")
                db.execute(
                    "UPDATE messages SET parent_id = (SELECT MAX(p.id) FROM messages p "
                    "WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id)"
                )
                db.execute("UPDATE conversations SET leaf_id = (SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = conversations.id)")
                db.execute("CREATE INDEX IF NOT EXISTS messages_by_parent ON messages(conversation_id, parent_id)")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.commit()
        except BaseException:
            db.rollback()
            raise

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
    def create(self, title: str, checkpoint: str | None, system_prompt: str | None = None, sampling: dict | None = None) -> int:
        now = _now()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO conversations (title, checkpoint, created, updated, system_prompt, sampling) VALUES (?, ?, ?, ?, ?, ?)",
                (title or "New chat", checkpoint, now, now, system_prompt or None, _json(sampling)),
            )
        return int(cur.lastrowid)

    def set_sampling(self, conversation_id: int, sampling: dict | None) -> None:
        """The chat's own sampling settings (a dict of engine.store.settings.Sampling's fields)."""
        with self.db:
            self.db.execute("UPDATE conversations SET sampling = ? WHERE id = ?", (_json(sampling), conversation_id))

    def set_system_prompt(self, conversation_id: int, system_prompt: str | None) -> None:
        """The conversation's system prompt; empty or None: none."""
        with self.db:
            self.db.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (system_prompt or None, conversation_id))

    def list(self) -> list[Conversation]:
        """Every conversation, the latest first; ``messages`` counts the turns shown (its path)."""
        rows = self.db.execute(
            "WITH RECURSIVE path(cid, id) AS ("
            " SELECT c.id, c.leaf_id FROM conversations c WHERE c.leaf_id IS NOT NULL"
            " UNION ALL SELECT path.cid, m.parent_id FROM path JOIN messages m ON m.id = path.id WHERE m.parent_id IS NOT NULL) "
            "SELECT c.id, c.title, c.checkpoint, c.created, c.updated, "
            "(SELECT COUNT(*) FROM path WHERE path.cid = c.id), c.system_prompt, c.sampling FROM conversations c "
            "ORDER BY c.updated DESC, c.id DESC"
        ).fetchall()
        return [Conversation(*row[:6], system_prompt=row[6], sampling=_from_json(row[7])) for row in rows]

    def search(self, text: str, limit: int = 200) -> list[Conversation]:
        """Conversations whose messages (or title) contain every word of ``text``, best first,
        each with a snippet of its best matching message."""
        query = fts_query(text)
        if not query:
            return self.list()
        hits = self.db.execute(
            "SELECT m.conversation_id, snippet(messages_fts, 0, '\u00bb', '\u00ab', '\u2026', 8), m.id "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "WHERE messages_fts MATCH ? ORDER BY bm25(messages_fts) LIMIT 5000",
            (query,),
        ).fetchall()
        by_id = {c.id: c for c in self.list()}
        found: list[Conversation] = []
        for conversation_id, snippet, message_id in hits:  # best message first: keep each chat's best
            conv = by_id.pop(conversation_id, None)
            if conv is not None:
                conv.snippet, conv.hit = snippet, message_id
                found.append(conv)
                if len(found) >= limit:
                    return found
        words = text.lower().split()
        found += [c for c in by_id.values() if all(w in c.title.lower() for w in words)]  # titles too
        return found[:limit]

    def get(self, conversation_id: int) -> Conversation | None:
        row = self.db.execute(
            "SELECT id, title, checkpoint, created, updated, system_prompt, sampling FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return Conversation(*row[:5], system_prompt=row[5], sampling=_from_json(row[6])) if row else None

    def rename(self, conversation_id: int, title: str) -> None:
        with self.db:
            self.db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- turns ---
    def add(self, conversation_id: int, turn: Turn, parent=LEAF) -> int:
        """Store a turn after ``parent`` (a message id; None: a first turn; default: the last
        turn shown) and show the path that ends with it; returns its message id.  A parent that
        already has a turn after it gets a new version of that turn (the old one is kept)."""
        now = _now()
        with self.db:
            if parent is LEAF:
                parent = self.db.execute("SELECT leaf_id FROM conversations WHERE id = ?", (conversation_id,)).fetchone()[0]
            cur = self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, stopped, checkpoint, created, edited, parent_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, turn.role, turn.content, int(turn.stopped), turn.checkpoint, now, int(turn.edited), parent),
            )
            self.db.execute(
                "UPDATE conversations SET updated = ?, checkpoint = COALESCE(?, checkpoint) WHERE id = ?",
                (now, turn.checkpoint, conversation_id),
            )
            self._show_leaf(conversation_id, cur.lastrowid)
        turn.id, turn.parent_id = int(cur.lastrowid), parent
        return turn.id

    def remove_turn(self, message_id: int) -> None:
        """Delete a message and every turn after it (in all its branches); the chat then shows
        the path through its parent (the newest of the versions left there)."""
        with self.db:
            row = self.db.execute("SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                return
            conversation_id, parent = row
            self.db.execute(
                "WITH RECURSIVE below(id) AS (SELECT ? UNION ALL SELECT m.id FROM messages m JOIN below ON m.parent_id = below.id) "
                "DELETE FROM messages WHERE id IN below",
                (message_id,),
            )
            if parent is None:  # a first turn: its newest sibling, if any
                parent = self.db.execute(
                    "SELECT MAX(id) FROM messages WHERE conversation_id = ? AND parent_id IS NULL", (conversation_id,)
                ).fetchone()[0]
            self._show_leaf(conversation_id, self._path_end(parent))

    def _path_end(self, message_id: int | None) -> int | None:
        """The end of the path down from a message: at each turn the version last shown there,
        else the newest."""
        while message_id is not None:
            child = self.db.execute(
                "SELECT COALESCE((SELECT c.id FROM messages c JOIN messages m ON c.id = m.shown_child AND c.parent_id = m.id WHERE m.id = ?), "
                "(SELECT MAX(id) FROM messages WHERE parent_id = ?))",
                (message_id, message_id),
            ).fetchone()[0]
            if child is None:
                return message_id
            message_id = child
        return None

    def _show_leaf(self, conversation_id: int, leaf: int | None) -> None:
        """Show the path that ends at ``leaf``; each message on it remembers the turn after it."""
        self.db.execute("UPDATE conversations SET leaf_id = ? WHERE id = ?", (leaf, conversation_id))
        self.db.execute(
            "WITH RECURSIVE path(id, parent) AS (SELECT id, parent_id FROM messages WHERE id = ? "
            "UNION ALL SELECT m.id, m.parent_id FROM path JOIN messages m ON m.id = path.parent) "
            "UPDATE messages SET shown_child = (SELECT path.id FROM path WHERE path.parent = messages.id) "
            "WHERE id IN (SELECT parent FROM path WHERE parent IS NOT NULL)",
            (leaf,),
        )

    def show(self, conversation_id: int, message_id: int) -> None:
        """Show the path through ``message_id`` (a search hit, another version of a turn): below
        it, the versions last shown there (else the newest)."""
        with self.db:
            found = self.db.execute(
                "SELECT 1 FROM messages WHERE id = ? AND conversation_id = ?", (message_id, conversation_id)
            ).fetchone()
            if found is None:
                raise KeyError(message_id)
            self._show_leaf(conversation_id, self._path_end(message_id))

    def versions(self, message_id: int) -> list[int]:
        """The ids of every version of this turn (itself included), oldest first."""
        row = self.db.execute("SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            return []
        return [r[0] for r in self.db.execute(
            "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS ? ORDER BY id", row
        )]

    def turns(self, conversation_id: int) -> list[Turn]:
        """The turns shown: the path from the first turn to the conversation's leaf."""
        rows = self.db.execute(PATH_QUERY, {"cid": conversation_id}).fetchall()
        return [
            Turn(role, content, bool(stopped), checkpoint, id_, bool(edited), parent, version, versions)
            for id_, parent, role, content, stopped, checkpoint, edited, version, versions in rows
        ]

    # --- export ---
    def to_markdown(self, conversation_id: int) -> str:
        conv = self.get(conversation_id)
        if conv is None:
            raise KeyError(conversation_id)
        lines = [f"# {conv.title}", "", f"*Checkpoint: {conv.checkpoint or 'none'} \u00b7 started {conv.created}*", ""]
        if conv.system_prompt:
            lines += ["**System:**", "", conv.system_prompt.rstrip(), ""]
        for turn in self.turns(conversation_id):
            who = "You" if turn.role == "user" else "Model (written by you)" if turn.edited else f"Model ({turn.checkpoint})" if turn.checkpoint else "Model"
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
