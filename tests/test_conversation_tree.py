"""Conversations as a message tree (branches): versions kept, the shown path, the migration of a
database from before branches, per-chat sampling stored with the chat.  A real SQLite file."""

from __future__ import annotations

import sqlite3

from tui.store.conversations import ConversationStore, Turn

# The schema of the last release before branches (a list of messages per conversation).
OLD_SCHEMA = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, checkpoint TEXT,
    created TEXT NOT NULL, updated TEXT NOT NULL, system_prompt TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, role TEXT NOT NULL,
    content TEXT NOT NULL, stopped INTEGER NOT NULL DEFAULT 0, checkpoint TEXT, created TEXT NOT NULL);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
"""


def contents(store, cid):
    return [t.content for t in store.turns(cid)]


def test_a_database_from_before_branches_keeps_every_chat(tmp_path):
    path = tmp_path / "conversations.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    chats = {"first": ["hi", "hello!", "how are you?", "fine"], "second": ["one", "two"], "empty": []}
    for title, texts in chats.items():
        cid = db.execute("INSERT INTO conversations (title, created, updated, system_prompt) VALUES (?, 't', 't', ?)",
                         (title, "Be kind." if title == "first" else None)).lastrowid
        for i, text in enumerate(texts):
            db.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (?, ?, ?, 't')",
                       (cid, "user" if i % 2 == 0 else "assistant", text))
    db.commit()
    db.close()

    store = ConversationStore(path)
    by_title = {c.title: c for c in store.list()}
    for title, texts in chats.items():
        conv = by_title[title]
        turns = store.turns(conv.id)
        assert [t.content for t in turns] == texts
        assert [t.role for t in turns] == ["user", "assistant"] * (len(texts) // 2)
        assert all(t.versions == 1 for t in turns)
        assert conv.messages == len(texts)
    assert by_title["first"].system_prompt == "Be kind."
    # the chats go on as trees: a new turn follows the last, a regenerated reply is a version
    first = by_title["first"].id
    store.add(first, Turn("user", "and you?"))
    assert contents(store, first)[-2:] == ["fine", "and you?"]
    store.close()
    # opened again (a second migration must not re-chain anything)
    again = ConversationStore(path)
    assert contents(again, first) == chats["first"] + ["and you?"]
    assert again.db.execute("PRAGMA user_version").fetchone()[0] >= 2


def test_edits_and_regenerations_are_versions_and_every_one_is_reachable(tmp_path):
    store = ConversationStore(tmp_path / "c.db")
    cid = store.create("chat", None)
    u1 = store.add(cid, Turn("user", "hi"))
    a1 = store.add(cid, Turn("assistant", "hello"))
    a2 = store.add(cid, Turn("assistant", "hey there"), parent=u1)  # regenerate
    assert contents(store, cid) == ["hi", "hey there"]
    assert [(t.version, t.versions) for t in store.turns(cid)] == [(1, 1), (2, 2)]
    u2 = store.add(cid, Turn("user", "hi!"), parent=None)  # edit the first message
    store.add(cid, Turn("assistant", "yo"))
    assert contents(store, cid) == ["hi!", "yo"]
    assert [(t.version, t.versions) for t in store.turns(cid)] == [(2, 2), (1, 1)]
    assert store.versions(u1) == [u1, u2] and store.versions(a1) == [a1, a2]
    store.show(cid, u1)  # back to the first version: below it, its newest reply
    assert contents(store, cid) == ["hi", "hey there"]
    store.show(cid, a1)
    assert contents(store, cid) == ["hi", "hello"]
    assert store.list()[0].messages == 2  # the turns shown, not every version
    # removing a turn shows the newest version left in its place
    store.remove_turn(a1)
    assert contents(store, cid) == ["hi", "hey there"]
    store.remove_turn(u2)  # with its reply
    assert contents(store, cid) == ["hi", "hey there"]
    assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2


def test_search_finds_text_in_any_branch_and_names_its_message(tmp_path):
    store = ConversationStore(tmp_path / "c.db")
    cid = store.create("chat", None)
    u1 = store.add(cid, Turn("user", "tell me about zebras"))
    store.add(cid, Turn("user", "tell me about lions"), parent=None)  # an edit: zebras are off the path
    hit = store.search("zebras")[0]
    assert (hit.id, hit.hit) == (cid, u1)
    store.show(cid, hit.hit)
    assert contents(store, cid) == ["tell me about zebras"]


def test_sampling_is_stored_with_the_chat(tmp_path):
    store = ConversationStore(tmp_path / "c.db")
    values = {"temperature": 0.3, "top_k": 7, "top_p": 0.5, "repetition_penalty": 1.4, "max_new_tokens": 33, "seed": 5}
    cid = store.create("chat", None, sampling=values)
    other = store.create("plain", None)
    store.close()
    store = ConversationStore(tmp_path / "c.db")
    assert store.get(cid).sampling == values and store.get(other).sampling is None
    store.set_sampling(other, {"temperature": 0.0})
    assert store.get(other).sampling == {"temperature": 0.0}
    assert {c.id: c.sampling for c in store.list()}[cid] == values


def test_switching_back_to_a_version_shows_the_turns_last_shown_below_it(tmp_path):
    store = ConversationStore(tmp_path / "c.db")
    cid = store.create("chat", None)
    u1 = store.add(cid, Turn("user", "hi"))
    a1 = store.add(cid, Turn("assistant", "hello"))
    store.add(cid, Turn("assistant", "hey"), parent=u1)  # newer, but not the one shown under u1 below
    store.show(cid, a1)
    u2 = store.add(cid, Turn("user", "edited hi"), parent=None)
    assert contents(store, cid) == ["edited hi"]
    store.show(cid, u1)  # back: "hello" was shown under it last, not the newest "hey"
    assert contents(store, cid) == ["hi", "hello"]
    store.show(cid, u2)
    assert contents(store, cid) == ["edited hi"]
