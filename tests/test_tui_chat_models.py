"""Chat models in the app: a system prompt per conversation, a prompt that keeps the most recent
whole turns that fit the window, the training form's stage, chat evaluations in the training
screen and the checkpoint picker, and the first-run offer of a chat model."""

from __future__ import annotations

import sqlite3

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Input, Select

from test_tui_support import FakeChat, anyio_backend, chat_turns, ckpt_home, fake_ready, home_with, make_fake, plain, wait_until  # noqa: F401
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput
from tui.screens.dialogs import PromptScreen

pytestmark = pytest.mark.anyio

SYSTEM = "[bold]Answer briefly.[/bold]"  # markup in it: shown literally


async def _send(pilot, text: str) -> None:
    app = pilot.app
    chat = app.views["chat"]
    inp = chat.query_one(ChatInput)
    inp.load_text(text)
    await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
    shown = len(chat_turns(app))
    await pilot.press("enter")
    await wait_until(pilot, lambda: chat.reply is None and len(chat_turns(app)) == shown + 2, 60, "the reply")


async def _set_system_prompt(pilot, text: str, key: str = "ctrl+s") -> None:
    app = pilot.app
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the system prompt dialog")
    app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(app.screen, PromptScreen), 5, "the dialog to close")


def _first_hit(app) -> str | None:
    """The command palette's first (highlighted) hit, once it lists one."""
    if not isinstance(app.screen, CommandPalette):
        return None
    results = app.screen.query_one(CommandList)
    if results.option_count == 0 or results.highlighted is None:
        return None
    return str(results.get_option_at_index(0).prompt).splitlines()[0]


def _system_line(app) -> str:
    line = app.views["chat"].query_one("#chat-system")
    return plain(line) if line.display else ""


async def test_system_prompt_belongs_to_its_conversation(fresh_dirs):
    """Ctrl+S sets the open chat's system prompt: shown literally under the status, stored with
    the chat, sent first; a new chat starts without one, a reopened chat brings its own back,
    and the palette's "Set system prompt" clears it."""
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        model = FakeChat(["ok."])
        await fake_ready(pilot, app, model)
        chat, store = app.views["chat"], app.conversations
        assert _system_line(app) == ""
        await _set_system_prompt(pilot, SYSTEM)  # before the chat's first message
        assert _system_line(app) == f"System: {SYSTEM}"
        assert isinstance(app.focused, ChatInput)
        await _send(pilot, "hello")
        first = chat.conversation_id
        assert model.messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
        assert store.get(first).system_prompt == SYSTEM
        await _send(pilot, "and again")  # every reply gets it, first
        assert model.messages[0] == {"role": "system", "content": SYSTEM} and len(model.messages) == 4

        await pilot.press("ctrl+n")  # a new chat: none
        await pilot.pause()
        assert _system_line(app) == "" and chat.system_prompt is None
        await _send(pilot, "no system here")
        second = chat.conversation_id
        assert [m["role"] for m in model.messages] == ["user"] and store.get(second).system_prompt is None

        app.open_conversation(first)  # its own comes back
        await wait_until(pilot, lambda: chat.conversation_id == first and len(chat_turns(app)) == 4, 10, "the first chat")
        assert _system_line(app) == f"System: {SYSTEM}"
        await _send(pilot, "still brief?")
        assert model.messages[0]["role"] == "system" and model.messages[-1]["content"] == "still brief?"

        # the palette entry edits the same prompt (shown in the dialog); empty clears it
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), 5, "the palette")
        await pilot.press(*"set system prompt")
        await wait_until(pilot, lambda: _first_hit(app) == "Set system prompt", 10, "the palette's hit")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the dialog from the palette")
        assert app.screen.query_one(Input).value == SYSTEM
        app.screen.query_one(Input).value = "  "
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, PromptScreen), 5, "the dialog to close")
        assert _system_line(app) == "" and store.get(first).system_prompt is None
        await _send(pilot, "plain now")
        assert model.messages[0]["role"] == "user"
        app.open_conversation(second)  # the other chat was never touched
        await wait_until(pilot, lambda: chat.conversation_id == second, 10, "the second chat")
        assert _system_line(app) == ""
        from tui.screens.help import help_rows

        assert any(key == "Ctrl+S" and "system prompt" in what for key, what, _id in help_rows(app))  # F6 lists it


async def test_a_database_from_before_system_prompts_opens_and_gains_them(fresh_dirs, tmp_path):
    """An older conversations file (no system_prompt column) opens with its chats intact, and
    its chats can be given a system prompt."""
    path = tmp_path / "old" / "conversations.db"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, checkpoint TEXT,
            created TEXT NOT NULL, updated TEXT NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id INTEGER NOT NULL
            REFERENCES conversations(id) ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL,
            stopped INTEGER NOT NULL DEFAULT 0, checkpoint TEXT, created TEXT NOT NULL);
        INSERT INTO conversations VALUES (1, 'an old chat', NULL, '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00');
        INSERT INTO messages VALUES (1, 1, 'user', 'old question', 0, NULL, '2025-01-01T00:00:00+00:00');
        INSERT INTO messages VALUES (2, 1, 'assistant', 'old answer', 0, NULL, '2025-01-01T00:00:00+00:00');
        """
    )
    db.commit()
    db.close()
    app = MiniGPTApp(autoload=False, conversations_path=path)
    async with app.run_test(size=(100, 30)) as pilot:
        model = FakeChat(["new answer"])
        await fake_ready(pilot, app, model)
        store = app.conversations
        assert store.warning is None  # not taken for a damaged file
        assert [(c.title, c.messages, c.system_prompt) for c in store.list()] == [("an old chat", 2, None)]
        app.open_conversation(1)
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.conversation_id == 1 and len(chat_turns(app)) == 2, 10, "the old chat")
        assert _system_line(app) == ""
        await _set_system_prompt(pilot, "Be kind.")
        await _send(pilot, "new question")
        assert model.messages[0] == {"role": "system", "content": "Be kind."} and len(model.messages) == 4
    from tui.store.conversations import ConversationStore

    again = ConversationStore(path)  # kept in the file
    assert again.get(1).system_prompt == "Be kind." and [t.content for t in again.turns(1)][-1] == "new answer"
    assert "**System:**" in again.to_markdown(1)
    again.close()


async def test_oldest_turns_left_out_whole_and_the_meter_counts_the_prompt(ckpt_home, tiny_checkpoint):
    """The reply's prompt is the most recent whole turns that fit the window (ChatModel.fit_chat),
    the system prompt always kept; the chat says how many turns were left out and the context
    meter counts the prompt the model read."""
    from engine.store.settings import Sampling, Settings

    system = "You are a helpful assistant."
    app = MiniGPTApp()
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model")
        app.settings = Settings(sampling=Sampling(max_new_tokens=4, seed=1))
        model, chat = app.chat_model, app.views["chat"]
        window = model.n_positions
        await _set_system_prompt(pilot, system)
        await _send(pilot, "And God said")
        status = plain(chat.query_one("#chat-status"))
        sent = [{"role": "system", "content": system}, {"role": "user", "content": "And God said"}]
        assert f"ctx {len(model.encode_chat(sent))}/{window}" in status and "cut" not in status
        long = " ".join(["light"] * window)  # fills the window alone
        await _send(pilot, long)
        await _send(pilot, "And there was light")
        messages = [{"role": "system", "content": system}] + [{"role": t.role, "content": t.content} for t in chat.turns[:-1]]
        ids, dropped = model.fit_chat(messages, 4)  # the system prompt kept, the oldest turns left out
        assert dropped >= 3  # the first exchange and the long message at least
        notes = [plain(n) for n in chat.query("NoteView")]
        assert f"(the oldest {dropped} turns no longer fit the model's window)" in notes
        status = plain(chat.query_one("#chat-status"))
        assert f"ctx {len(ids)}/{window}" in status and f"\u2702 {dropped} turns cut" in status


def test_build_config_stage_sets_the_default_dataset():
    from tui.screens.training import build_config

    assert build_config({"stage": "chat"}).dataset == "chitchat"
    assert build_config({"stage": "base"}).dataset is None  # the engine's default text
    assert build_config({}).dataset == "chitchat"  # the form's default stage
    assert build_config({"stage": "base", "dataset": " chats.jsonl "}).dataset == "chats.jsonl"  # typed wins
    assert build_config({"stage": "chat", "dataset": "builtin"}).dataset == "builtin"


async def _picker_cells(pilot, rows: int) -> tuple[DataTable, callable]:
    """F3 from the app with no model, once its table lists ``rows`` rows: the table, and a row's
    cells by column key."""
    app = pilot.app
    await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
    await pilot.press("f3")
    await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints") and app.screen.loaded, 10, "the picker")
    table = app.screen.query_one("#ckpt-table", DataTable)
    await wait_until(pilot, lambda: table.row_count == rows, 5, "the rows")
    keys = [c.key.value for c in table.ordered_columns]
    return table, lambda name: {k: str(c) for k, c in zip(keys, table.get_row(name))}


async def _training_screen(pilot):
    """F2 from the app with no model: the training screen."""
    app = pilot.app
    await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
    await pilot.press("f2")
    await wait_until(pilot, lambda: app.screen is app.views.get("training"), 10, "the training screen")
    return app.screen


async def test_training_form_offers_the_stage(fresh_dirs):
    from tui.screens.training import build_config

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _training_screen(pilot)
        stage, dataset = screen.query_one("#f-stage", Select), screen.query_one("#f-dataset", Input)
        assert stage.value == "chat" and "chitchat" in dataset.placeholder
        assert ".jsonl" in plain(screen.query_one("#dataset-help")) and "chitchat" in plain(screen.query_one("#dataset-help"))
        assert build_config(screen.form_values()).dataset == "chitchat"
        stage.focus()  # the user picks "base (text)" from the list
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: stage.value == "base", 5, "the base stage")
        assert "wikitext" in dataset.placeholder and "chitchat" not in dataset.placeholder
        assert build_config(screen.form_values()).dataset is None
        dataset.value = "my-chats.jsonl"  # what the user typed wins
        assert build_config(screen.form_values()).dataset == "my-chats.jsonl"


async def test_training_screen_shows_chat_evaluations(fresh_dirs):
    from engine import events as ev
    from tui.messages import TrainEventMessage
    from tui.state.run_state import RunState

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _training_screen(pilot)
        app.run_state = RunState(status="running", name="chatty")
        app.post_message(TrainEventMessage(ev.TrainEval(10, 3.5, 33.1, 1.2)))  # a text run: no chat scores
        await wait_until(pilot, lambda: "val loss 3.5000" in plain(screen.query_one("#run-eval")), 5, "the evaluation")
        assert "end-of-turn" not in plain(screen.query_one("#run-eval"))
        app.post_message(TrainEventMessage(ev.TrainEval(20, 3.0, 20.1, 1.1, eot_rate=0.9375, ranking_top1=0.40625)))
        await wait_until(pilot, lambda: "end-of-turn" in plain(screen.query_one("#run-eval")), 5, "the chat evaluation")
        shown = plain(screen.query_one("#run-eval"))
        assert "end-of-turn 94%" in shown and "ranking 41%" in shown
        assert "end-of-turn 94%, ranking 41%" in app.run_state.log[-1]
        app.run_state.done.set()  # (no worker runs this run: the app need not wait for it at exit)


async def test_picker_marks_chat_models_and_their_scores(fresh_dirs, monkeypatch):
    from engine.store import checkpoints
    from engine.store.checkpoints import CheckpointStore

    monkeypatch.setattr(checkpoints, "hf_cache_models", lambda: [])
    store = CheckpointStore()
    store.root.mkdir(parents=True)
    make_fake(store, "chatty", dataset="chitchat (human-human chats)", chat=True, eot_rate=0.9375, ranking_top1=0.40625)
    make_fake(store, "texty")
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        table, cells = await _picker_cells(pilot, 2)
        keys = [c.key.value for c in table.ordered_columns]
        assert [cells("chatty")[k] for k in ("chat", "eot_rate", "ranking_top1")] == ["yes", "94%", "41%"]
        assert [cells("texty")[k] for k in ("chat", "eot_rate", "ranking_top1")] == ["", "-", "-"]
        # at 80 columns the table still shows each model's name to its validation loss, chat included
        await pilot.pause()
        shown = sum(col.get_render_width(table) for col in table.ordered_columns[: keys.index("val_loss") + 1])
        assert shown <= table.scrollable_content_region.width, (shown, table.scrollable_content_region.width)


async def test_first_run_offer_is_a_chat_model(fresh_dirs):
    app = MiniGPTApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        await wait_until(pilot, lambda: app.views["chat"].query("#welcome-text"), 5, "the first-run offer")
        text = plain(app.views["chat"].query_one("#welcome-text"))
        assert "chat model" in text and "chitchat" in text and "3 minutes on a CPU" in text
        assert "WikiText" not in text and "built-in corpus" not in text


@pytest.fixture
def chat_home(tiny_chat_checkpoint, isolated_dirs, fresh_dirs):
    """Fresh data/config dirs holding a copy of the session's tiny chat checkpoint."""
    return home_with(tiny_chat_checkpoint, isolated_dirs)


async def test_a_chat_checkpoint_from_the_picker_answers_with_the_system_prompt(chat_home, tiny_chat_checkpoint, monkeypatch):
    """A real chat model: the picker says so (with its scores), and its replies are made from
    the conversation rendered through its chat template, the system prompt first."""
    from engine.store import checkpoints
    from engine.store.settings import Sampling, Settings
    from tui.screens.checkpoint_picker import _pct

    monkeypatch.setattr(checkpoints, "hf_cache_models", lambda: [])
    meta = chat_home.get(tiny_chat_checkpoint).meta
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        _table, row = await _picker_cells(pilot, 1)
        cells = row(tiny_chat_checkpoint)
        assert cells["chat"] == "yes" and meta["chat"] is True
        assert cells["eot_rate"] == _pct(meta["eot_rate"]) != "-" and cells["ranking_top1"] == _pct(meta["ranking_top1"]) != "-"
        await pilot.press("enter")  # use it
        await wait_until(pilot, lambda: app.model_status == "ready" and app.screen is app.views["chat"], 120, "the chat model")
        model = app.chat_model
        assert model.is_chat
        app.settings = Settings(sampling=Sampling(max_new_tokens=8, seed=1))
        await _set_system_prompt(pilot, "Be brief.")
        await _send(pilot, "hi, how are you?")
        sent = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi, how are you?"}]
        ids = model.encode_chat(sent)
        assert "Be brief." in model.tokenizer.decode(ids)  # the template renders the system prompt
        assert f"ctx {len(ids)}/{model.n_positions}" in plain(app.views["chat"].query_one("#chat-status"))


async def test_a_reply_cut_at_the_token_limit_says_so(fresh_dirs):
    """A reply that ends its turn shows its stats; one that ran into max new tokens says so."""
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["Fine, ", "thanks."]))
        await _send(pilot, "hi, how are you?")
        status = plain(app.views["chat"].query_one("#chat-status"))
        assert "2 tok" in status and "token limit" not in status
        app.chat_model = FakeChat(["and ", "on ", "and "], ends="length")
        await _send(pilot, "go on")
        assert "token limit \u00b7 3 tok \u00b7 100 tok/s \u00b7 1st token 1 ms" in plain(app.views["chat"].query_one("#chat-status"))
