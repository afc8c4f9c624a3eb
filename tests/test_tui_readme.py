"""What the README promises in the app and nothing else tested: Shift+Enter, Ctrl+T, the picker's
details and header-click sort, export overwrite confirmation, the Hugging Face cache section."""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import DataTable

from test_tui_support import FakeChat, anyio_backend, ckpt_home, copy_checkpoint, plain, wait_until  # noqa: F401
from engine.training.config import FIRST_RUN_BUDGET_S, FIRST_RUN_DATASET
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView
from tui.screens.dialogs import ConfirmScreen, DetailsScreen, PromptScreen
from tui.screens.saved_chats import ConversationsScreen

pytestmark = pytest.mark.anyio


async def _chat_input(pilot, app) -> ChatInput:
    inp = app.screen.query_one(ChatInput)
    inp.focus()
    await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
    return inp


async def test_shift_enter_is_a_newline_not_a_send(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        app.chat_model, app.active_name, app.model_status = FakeChat(["ok"]), "fake", "ready"
        await pilot.pause()
        inp = await _chat_input(pilot, app)
        await pilot.press("a", "shift+enter", "b")
        assert inp.text == "a\nb"
        assert not list(app.screen.query(TurnView))  # nothing sent
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(list(app.screen.query(TurnView))) == 2, 10, "the reply")
        assert list(app.screen.query(TurnView))[0].text == "a\nb"


async def test_ctrl_t_trains_the_default_model(fresh_dirs):
    app = MiniGPTApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up without a checkpoint")
        await _chat_input(pilot, app)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: app.run_state.status != "idle", 10, "the run to start")
        state = app.run_state
        # the engine's defaults for the first-run budget (the CPU's: no GPU here)
        assert state.config.preset == "seed" and state.config.max_steps is None and state.config.dataset == FIRST_RUN_DATASET == "chitchat"
        assert state.config.time_budget == FIRST_RUN_BUDGET_S["cpu"]
        await wait_until(pilot, lambda: app.screen is app.views.get("training"), 10, "the training screen")
        await wait_until(pilot, lambda: state.job is not None or state.done.is_set(), 60, "the job")
        assert state.job is not None, (state.status, state.error)  # the job was made (none: it failed first)
        state.job.cancel(save=False)
        await wait_until(pilot, lambda: state.done.is_set(), 240, "the run to stop")


async def test_picker_details_and_header_click_sort(ckpt_home, tiny_checkpoint):
    import json

    copy_checkpoint(ckpt_home, tiny_checkpoint, "b-more-steps")
    meta_file = ckpt_home.root / "b-more-steps" / "minigpt.json"
    meta = json.loads(meta_file.read_text())
    meta["steps"] = 999
    meta_file.write_text(json.dumps(meta))
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("f3")
        await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints"), 10, "picker")
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, 30, "the picker's listing")  # read on a worker
        table = screen.query_one("#ckpt-table", DataTable)
        names = lambda: [row.key.value for row in table.ordered_rows]  # noqa: E731
        assert names() == ["b-more-steps", tiny_checkpoint]  # by name
        # click the "steps" header: ascending steps, then again: descending
        steps = [col.key.value for col in table.ordered_columns].index("steps")
        x = sum(col.get_render_width(table) for col in table.ordered_columns[:steps]) + 2
        await pilot.click("#ckpt-table", offset=(x, 0))
        await wait_until(pilot, lambda: screen.sort_index == steps, 5, "sort by steps")
        assert names() == [tiny_checkpoint, "b-more-steps"]
        await pilot.click("#ckpt-table", offset=(x, 0))
        await wait_until(pilot, lambda: screen.sort_reverse, 5, "reverse sort")
        assert names() == ["b-more-steps", tiny_checkpoint]
        # details of the selected checkpoint
        table.focus()
        table.move_cursor(row=table.get_row_index("b-more-steps"))
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailsScreen), 5, "details")
        shown = " ".join(plain(w) for w in app.screen.query("Static"))
        assert "b-more-steps" in shown and "999" in shown and "bits" in shown.lower()
        await pilot.press("escape")


async def test_export_overwrite_asks_and_yes_overwrites(fresh_dirs):
    from tui.store.conversations import Turn

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        cid = app.conversations.create("a chat", None)
        app.conversations.add(cid, Turn("user", "the question"))
        path = app.conversations.default_export_path(cid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("old content")
        await pilot.press("f5")
        # the rows are read on a worker: 'e' exports the highlighted row, so wait for it
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationsScreen) and app.screen.loaded == "", 10, "the saved chats listed")
        assert app.screen.query_one(DataTable).row_count == 1
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen) and app.focused is app.screen.query_one("#prompt-input"), 10, "the export path prompt")
        await pilot.press("enter")  # the default path, which exists
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the overwrite question")
        assert path.read_text() == "old content"
        await pilot.press("y")
        await wait_until(pilot, lambda: path.read_text() != "old content", 5, "the overwrite")
        assert "the question" in path.read_text()


async def test_hugging_face_cache_section_lists_a_real_snapshot(fresh_dirs, tiny_checkpoint_dir, tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-gpt"
    blobs, snap = repo / "blobs", repo / "snapshots" / ("a" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_checkpoint_dir / f).exists():
            blob = blobs / f"blob-{f}"
            shutil.copyfile(tiny_checkpoint_dir / f, blob)
            (snap / f).symlink_to(f"../../blobs/blob-{f}")
    # where huggingface_hub looks (its setting is read at import time: set it where the scan reads it)
    monkeypatch.setitem(scan_cache_dir.__globals__, "HF_HUB_CACHE", str(cache))
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("f3")
        await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints"), 10, "picker")
        screen = app.screen
        await wait_until(pilot, lambda: screen.hf_models, 30, "the cache scan")
        assert [m["repo_id"] for m in screen.hf_models] == ["someone/tiny-gpt"]
        hf = screen.query_one("#hf-table", DataTable)
        assert [row.key.value for row in hf.ordered_rows] == [str(snap)]
        # choosing it chats with that folder
        hf.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the cached model to load")
        assert app.active_name == "someone/tiny-gpt"
