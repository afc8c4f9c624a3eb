"""Saved chats as training data: JSONL export (one chat, all) and import in the ``messages``
format, from the saved-chats dialog; "saved-chats" as the training form's dataset; and (slow) a
corrected reply that a one-minute fine-tune on the export learns."""

from __future__ import annotations

import json
import subprocess

import pytest
from textual.widgets import DataTable, Input

from conftest import minigpt_cmd
from test_tui_support import plain, wait_until
from tui.app import MiniGPTApp
from tui.store.chat_jsonl import ChatFileError, default_jsonl_path, export_jsonl, import_jsonl, read_jsonl, training_export_path
from tui.store.conversations import ConversationStore, Turn


@pytest.fixture
def anyio_backend():
    """The async tests run on asyncio (Textual needs it)."""
    return "asyncio"


def _fill(store: ConversationStore) -> dict[str, int]:
    """Three chats: one with a system prompt and a stopped reply, one with a corrected reply,
    one without any reply."""
    a = store.create("greeting", "m1", system_prompt="Be brief.")
    store.add(a, Turn("user", "hi, how are you?"))
    store.add(a, Turn("assistant", "good, you?", checkpoint="m1"))
    store.add(a, Turn("user", "why?\nTell me."))
    store.add(a, Turn("assistant", "because it is \u00e9t\u00e9", stopped=True, checkpoint="m1"))
    b = store.create("capital", "m1")
    question = store.add(b, Turn("user", "the capital of France?"))
    store.add(b, Turn("assistant", "Lyon", checkpoint="m1"))
    store.add(b, Turn("assistant", "Paris.", edited=True), parent=question)  # the user's correction: a new version of the reply, shown
    c = store.create("unanswered", None)
    store.add(c, Turn("user", "anyone there?"))
    return {"a": a, "b": b, "c": c}


ROW_A = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi, how are you?"},
        {"role": "assistant", "content": "good, you?"},
        {"role": "user", "content": "why?\nTell me."},
        {"role": "assistant", "content": "because it is \u00e9t\u00e9"},
    ],
    "title": "greeting",
    "checkpoint": "m1",
    "edited": [False, False, False, False, False],
    "stopped": [False, False, False, False, True],
}
ROW_B = {
    "messages": [
        {"role": "user", "content": "the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    "title": "capital",
    "checkpoint": "m1",
    "edited": [False, True],
    "stopped": [False, False],
}


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_one_chat_and_all_as_messages_rows(tmp_path):
    store = ConversationStore(tmp_path / "chats.sqlite3")
    ids = _fill(store)
    one = export_jsonl(store, [ids["a"]], tmp_path / "one.jsonl")
    assert one.chats == 1 and not one.left_out
    assert _rows(tmp_path / "one.jsonl") == [ROW_A]
    assert "\u00e9t\u00e9" in (tmp_path / "one.jsonl").read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    every = export_jsonl(store, None, tmp_path / "all.jsonl")
    # most recently updated first (the store's list order); the chat without a reply is left out
    assert _rows(tmp_path / "all.jsonl") == [ROW_B, ROW_A]
    assert every.chats == 2 and every.left_out == ["unanswered"]
    assert every.summary() == f"Exported 2 chats to {tmp_path / 'all.jsonl'} (1 without a reply left out)"
    with pytest.raises(FileExistsError):
        export_jsonl(store, None, tmp_path / "all.jsonl")
    with pytest.raises(ChatFileError, match="'unanswered' has no reply yet"):
        export_jsonl(store, [ids["c"]], tmp_path / "c.jsonl")
    assert not (tmp_path / "c.jsonl").exists()
    assert default_jsonl_path(store, ids["a"]) == tmp_path / "exports" / f"{ids['a']}-greeting.jsonl"
    assert default_jsonl_path(store) == tmp_path / "exports" / "saved-chats.jsonl"
    with pytest.raises(ChatFileError, match="no saved chats yet"):
        export_jsonl(ConversationStore(tmp_path / "empty.sqlite3"), None, tmp_path / "none.jsonl")


def test_the_export_is_a_conversation_dataset_for_training(tmp_path):
    """The engine reads the exported file as conversations: the messages column only, the app's
    own keys dropped; a file of a single chat trains and validates on that chat."""
    from engine.data import sources
    from engine.data.chat_format import check_messages
    from engine.data.conversations import hold_out_conversations

    store = ConversationStore(tmp_path / "chats.sqlite3")
    _fill(store)
    export_jsonl(store, None, tmp_path / "all.jsonl")
    source = sources.resolve(str(tmp_path / "all.jsonl"))
    assert source.chat and source.splits["train"].column_names == ["messages"]
    rows = list(source.splits["train"]["messages"])
    assert [check_messages(m, "row") for m in rows] == [ROW_B["messages"], ROW_A["messages"]]
    notes = []
    splits = hold_out_conversations(source.splits, notes.append)  # 2 chats: none to spare for validation
    assert len(splits["train"]) == 2 and splits["validation"] is splits["train"]
    assert notes == ["only 2 conversations: all train, none held out (validation scores the training conversations)"]


def test_import_gives_back_the_exported_chats(tmp_path):
    store = ConversationStore(tmp_path / "chats.sqlite3")
    ids = _fill(store)
    export_jsonl(store, None, tmp_path / "all.jsonl")
    other = ConversationStore(tmp_path / "other.sqlite3")
    done = import_jsonl(other, tmp_path / "all.jsonl")
    assert done.chats == 2 and not done.skipped and done.summary() == "Imported 2 chats from all.jsonl"

    def shown(s: ConversationStore, cid: int):
        conv = s.get(cid)
        turns = [(t.role, t.content, t.stopped, t.edited) for t in s.turns(cid)]
        return conv.title, conv.system_prompt, conv.checkpoint, turns

    assert sorted(shown(other, cid) for cid in done.ids) == sorted(shown(store, ids[k]) for k in ("a", "b"))
    # the model that wrote each reply, as far as the file says; the user's correction has none
    b = next(cid for cid in done.ids if other.get(cid).title == "capital")
    assert [t.checkpoint for t in other.turns(b)] == [None, None]
    # importing again adds nothing: those chats are saved already
    again = import_jsonl(other, tmp_path / "all.jsonl")
    assert again.chats == 0 and again.skipped == {"already saved": 2}
    assert again.summary() == "Imported 0 chats from all.jsonl; skipped 2 (already saved: 2)"
    assert len(other.list()) == 2


def test_import_of_other_files_titles_and_skips(tmp_path):
    path = tmp_path / "theirs.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "  what is 2+2?  "}, {"role": "assistant", "content": "4"}], "id": 7},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "system", "content": "late"}]},
        {"messages": [{"role": "system", "content": "only a system prompt"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    store = ConversationStore(tmp_path / "chats.sqlite3")
    done = import_jsonl(store, path)
    assert done.chats == 1 and done.skipped == {"a system message after the start": 1, "no user or assistant message": 1}
    conv = store.get(done.ids[0])
    assert conv.title == "what is 2+2?" and conv.system_prompt is None and conv.checkpoint is None
    assert [(t.role, t.content, t.edited, t.stopped) for t in store.turns(conv.id)] == [
        ("user", "  what is 2+2?  ", False, False), ("assistant", "4", False, False)]


GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


@pytest.mark.parametrize(
    "content, message",
    [
        ("# My chat\n\n**You:** hi\n", "bad.jsonl line 1: not JSON (Expecting value at column 1)"),
        (GOOD + "\n" + json.dumps({"text": "a document"}) + "\n", "bad.jsonl line 2: no 'messages' (its keys: text)"),
        (GOOD + "\n\n" + json.dumps({"messages": [{"role": "narrator", "content": "once"}]}) + "\n",
         "bad.jsonl line 3: message 1 has role 'narrator': use system, user or assistant"),
        ("[1, 2]\n", "bad.jsonl line 1: not a JSON object"),
        (json.dumps({"messages": []}), "bad.jsonl line 1: 'messages' must be a non-empty list of {role, content}"),
        (json.dumps({"messages": [{"role": "user"}]}), "bad.jsonl line 1: message 1 must have 'role' and 'content'"),
        (json.dumps({"messages": [{"role": "user", "content": 5}]}), "bad.jsonl line 1: message 1's content must be text"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "edited": [1]}),
         "bad.jsonl line 1: 'edited' must be a list of true/false, one per message (1)"),
        ("\n \n", "bad.jsonl holds no chats (an empty file)"),
        (b"\xff\xfe\x00junk", "bad.jsonl is not UTF-8 text (bad byte at offset 0)"),
    ],
    ids=["markdown", "no-messages", "bad-role", "not-an-object", "empty-messages", "no-content", "content-not-text",
         "bad-flags", "empty-file", "not-utf8"],
)
def test_a_bad_file_is_a_one_line_error_and_imports_nothing(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    store = ConversationStore(tmp_path / "chats.sqlite3")
    with pytest.raises(ChatFileError) as info:
        import_jsonl(store, path)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert store.list() == []  # a good line before the bad one is not imported either
    with pytest.raises(ChatFileError):
        read_jsonl(path)


# --- the app ----------------------------------------------------------------------------------


async def _saved_chats(pilot, app, rows: int):
    from tui.screens.saved_chats import ConversationsScreen

    await pilot.press("f5")
    await wait_until(pilot, lambda: isinstance(app.screen, ConversationsScreen) and app.screen.loaded == "", 10, "the saved chats listed")
    await wait_until(pilot, lambda: app.screen.query_one(DataTable).row_count == rows, 5, "the rows")
    return app.screen


async def _answer_prompt(pilot, app, value: str | None = None):
    """The path prompt is up: Enter its default (or type ``value`` first)."""
    from tui.screens.dialogs import PromptScreen

    await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen) and app.focused is app.screen.query_one("#prompt-input"), 10, "the path prompt")
    default = app.screen.query_one("#prompt-input", Input).value
    if value is not None:
        app.screen.query_one("#prompt-input", Input).value = value
    await pilot.press("enter")
    return default


def _notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


@pytest.mark.anyio
async def test_saved_chats_dialog_exports_jsonl_and_imports_it(fresh_dirs):
    from tui.screens.dialogs import ConfirmScreen
    from tui.screens.saved_chats import ConversationsScreen

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        store = app.conversations
        ids = _fill(store)
        screen = await _saved_chats(pilot, app, 3)
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index(str(ids["a"])))
        # j: the highlighted chat, at the default path
        await pilot.press("j")
        one = default_jsonl_path(store, ids["a"])
        assert await _answer_prompt(pilot, app) == str(one)
        await wait_until(pilot, lambda: one.exists(), 5, "the chat's export")
        assert _rows(one) == [ROW_A] and f"Exported 1 chat to {one}" in _notes(app)
        # a: every chat; again: asks before overwriting
        every = default_jsonl_path(store)
        for answer in ("n", "y"):
            await pilot.press("a")
            assert await _answer_prompt(pilot, app) == str(every)
            if answer == "y":
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the overwrite question")
                every.write_text("old")
                await pilot.press("y")
                await wait_until(pilot, lambda: every.read_text() != "old", 5, "the overwrite")
            else:
                await wait_until(pilot, lambda: every.exists() and isinstance(app.screen, ConversationsScreen), 5, "the export")
        assert _rows(every) == [ROW_B, ROW_A]
        assert f"Exported 2 chats to {every} (1 without a reply left out)" in _notes(app)
        # i: import (the default is the export of every chat): all are saved already
        await pilot.press("i")
        assert await _answer_prompt(pilot, app) == str(every)
        await wait_until(pilot, lambda: any(n.startswith("Imported") for n in _notes(app)), 5, "the import")
        assert "Imported 0 chats from saved-chats.jsonl; skipped 2 (already saved: 2)" in _notes(app)
        # ... into a fresh database: the chats come back, listed
        for cid in list(ids.values()):
            store.delete(cid)
        screen.reload()
        await wait_until(pilot, lambda: table.row_count == 0, 5, "the emptied list")
        await pilot.press("i")
        await _answer_prompt(pilot, app)
        await wait_until(pilot, lambda: table.row_count == 2, 5, "the imported chats listed")
        assert "Imported 2 chats from saved-chats.jsonl" in _notes(app)
        assert sorted(c.title for c in store.list()) == ["capital", "greeting"]
        # a bad file: one line that says why, nothing imported
        bad = fresh_dirs / "notes.jsonl"
        bad.write_text(GOOD + "\n" + json.dumps({"messages": [{"role": "bot", "content": "?"}]}) + "\n")
        await pilot.press("i")
        await _answer_prompt(pilot, app, str(bad))
        await wait_until(pilot, lambda: any(n.startswith("Nothing imported") for n in _notes(app)), 5, "the error")
        assert "Nothing imported: notes.jsonl line 2: message 1 has role 'bot': use system, user or assistant" in _notes(app)
        assert len(store.list()) == 2
        # a path that is not a file: the prompt says so and stays
        await pilot.press("i")
        await _answer_prompt(pilot, app, str(fresh_dirs / "missing.jsonl"))
        await pilot.pause()
        assert "no such file" in plain(app.screen.query_one("#prompt-error"))


@pytest.mark.anyio
async def test_training_form_trains_on_the_saved_chats(fresh_dirs):
    """"saved-chats" in the Dataset field: without a chat with a reply the form says so; with
    some, it exports them (their shown paths) and the run trains on that file."""
    from test_tui_training import _fill as fill_form, _open_training

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await _open_training(pilot, app)
        assert "saved-chats" in plain(screen.query_one("#dataset-help"))
        fill_form(screen, name="from-chats", dataset="saved-chats", preset="tiny", steps="2", tokenizer="bpe:300")
        await pilot.press("ctrl+r")
        await pilot.pause()
        error = plain(screen.query_one("#form-error"))
        assert error.startswith("saved-chats: no saved chats yet") and screen.query_one("#f-dataset", Input).has_class("-invalid")
        assert app.run_state.status == "idle"
        _fill(app.conversations)
        await pilot.press("ctrl+r")
        state = app.run_state
        await wait_until(pilot, lambda: state.step is not None or state.status in ("finished", "failed"), 240, "the run's first step")
        assert state.status in ("running", "finished"), state.error
        exported = training_export_path(app.conversations)
        assert state.config.dataset == str(exported) and _rows(exported) == [ROW_B, ROW_A]
        assert state.started.dataset == str(exported)
        assert f"saved-chats: Exported 2 chats to {exported} (1 without a reply left out)" in state.log
        assert any("only 2 conversations: all train" in line for line in state.log)
        await pilot.press("ctrl+s")  # (stop: saves first)
        await wait_until(pilot, lambda: state.status in ("stopped", "finished", "failed"), 120, "the run's end")
        assert state.status in ("stopped", "finished"), state.error


# --- correct, export, train: the corrected reply is learnt ---------------------------------------


def _reply_loss(model_dir, messages: list[dict], index: int) -> float:
    """Mean loss of message ``index``'s tokens (its text and end of turn: what training learns of
    an assistant turn) in ``messages``, rendered with the checkpoint's own chat format."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.data.chat_format import Renderer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    rendered = Renderer(tokenizer).render_many([messages])[0]
    start = rendered.starts[index]
    end = rendered.starts[index + 1] if index + 1 < len(rendered.starts) else len(rendered.ids)
    ids = torch.tensor([rendered.ids])
    labels = torch.full_like(ids, -100)
    for i in range(start, end):
        if rendered.mask[i]:
            labels[0, i] = ids[0, i]
    assert (labels != -100).sum() > 3
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


@pytest.mark.slow  # a one-minute training run
def test_a_corrected_reply_is_learnt_by_a_fine_tune_on_the_export(tiny_chat_checkpoint, tmp_path, cli_env):
    """Correct-and-train: a chat (the model's real reply, then the user's correction of it) in a
    real database, exported as JSONL, fine-tuned on for one minute from the chat's checkpoint with
    the headless command: the corrected reply's loss drops."""
    from engine.generation.chat_model import ChatModel
    from engine.store.settings import Sampling
    from engine.store.checkpoints import CheckpointStore

    init = CheckpointStore().path(tiny_chat_checkpoint)
    store = ConversationStore(tmp_path / "conversations.sqlite3")
    question = "what did you do this weekend?"
    cid = store.create(question, tiny_chat_checkpoint)
    asked = store.add(cid, Turn("user", question))
    chat = ChatModel.from_checkpoint(tiny_chat_checkpoint, device="cpu")
    messages = [{"role": "user", "content": question}]
    reply = chat.generate_text(chat.encode_chat(messages), Sampling(temperature=0, repetition_penalty=1.0, max_new_tokens=24))
    store.add(cid, Turn("assistant", reply, checkpoint=tiny_chat_checkpoint))
    correction = "I went hiking in the mountains with my sister, and we saw two eagles."
    store.add(cid, Turn("assistant", correction, edited=True), parent=asked)  # what Ctrl+F stores (tests/test_tui_branches.py)
    path = tmp_path / "corrected.jsonl"
    export_jsonl(store, [cid], path)
    (row,) = _rows(path)
    index = row["edited"].index(True)
    assert row["messages"][index] == {"role": "assistant", "content": correction}
    assert reply not in [m["content"] for m in row["messages"]]  # the model's version is not trained on
    before = _reply_loss(init, row["messages"], index)

    out = subprocess.run(
        [*minigpt_cmd(), "train", "--dataset", str(path), "--init", str(init), "--preset", "tiny", "--time", "1m", "--name", "corrected"],
        env=cli_env, capture_output=True, text=True, timeout=400,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    after = _reply_loss(CheckpointStore().path("corrected"), row["messages"], index)
    assert after < 0.5 * before, (before, after)
