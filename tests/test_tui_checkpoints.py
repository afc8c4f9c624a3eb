"""The checkpoint picker: listing (broken ones too), choosing, renaming, deleting, resuming."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input

from test_tui_support import anyio_backend, ckpt_home, copy_checkpoint, make_broken, plain, wait_until  # noqa: F401
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView
from tui.screens.dialogs import ConfirmScreen

pytestmark = pytest.mark.anyio


async def _picker(pilot, app):
    await pilot.press("f3")
    await wait_until(pilot, lambda: app.views.get("checkpoints") is not None and app.screen is app.views["checkpoints"], 10, "picker")
    await wait_until(pilot, lambda: app.screen.loaded, 10, "the checkpoint listing")
    return app.screen


def _row_names(screen) -> list[str]:
    table = screen.query_one("#ckpt-table", DataTable)
    return [row.key.value for row in table.ordered_rows]


def _cursor_to(screen, name: str) -> None:
    table = screen.query_one("#ckpt-table", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(name))


async def test_broken_checkpoint_listed_with_reason(ckpt_home, tiny_checkpoint):
    make_broken(ckpt_home, "broken-one")
    app = MiniGPTApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "model")
        screen = await _picker(pilot, app)
        assert _row_names(screen) == [tiny_checkpoint, "broken-one"]  # good ones first
        table = screen.query_one("#ckpt-table", DataTable)
        cells = dict(zip([c.key.value for c in table.ordered_columns], (str(c) for c in table.get_row("broken-one"))))
        assert "BROKEN" in cells["preset"] and "config.json is not valid JSON" in cells["dataset"]
        assert "1 broken" in plain(screen.query_one("#ckpt-status"))
        # choosing it explains instead of crashing; the active model stays
        _cursor_to(screen, "broken-one")
        await pilot.press("enter")
        await pilot.pause()
        assert app.active_name == tiny_checkpoint and app.model_status == "ready"
        # details work for it too
        await pilot.press("i")
        await pilot.pause()
        from tui.screens.dialogs import DetailsScreen

        assert isinstance(app.screen, DetailsScreen)
        await pilot.press("escape")


async def test_pick_another_checkpoint_chat_uses_it(ckpt_home, tiny_checkpoint):
    copy_checkpoint(ckpt_home, tiny_checkpoint, "other-model")
    app = MiniGPTApp(checkpoint=tiny_checkpoint)  # like `minigpt-tui --checkpoint NAME`
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "model")
        assert app.active_name == tiny_checkpoint
        first_model = app.chat_model
        screen = await _picker(pilot, app)
        _cursor_to(screen, "other-model")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.model_status == "ready" and app.active_name == "other-model", 120, "the switch")
        assert app.chat_model is not first_model and app.chat_model.name == "other-model"
        assert app.screen is app.views["chat"]
        assert "other-model" in plain(app.screen.query_one("#chat-status"))
        app.settings = app.settings.__class__(active_checkpoint=app.settings.active_checkpoint, sampling=app.settings.sampling.__class__(max_new_tokens=8))
        inp = app.screen.query_one(ChatInput)
        inp.load_text("hello")
        inp.focus()
        await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.views["chat"].reply is None and len(app.screen.query(TurnView)) == 2, 60, "reply")
        assert app.screen.query(TurnView).last().who == "other-model"
        assert app.conversations.turns(app.conversations.list()[0].id)[-1].checkpoint == "other-model"
    # remembered for the next start
    from engine.store.settings import load_settings

    assert load_settings().active_checkpoint == "other-model"


async def test_rename_delete_and_sort(ckpt_home, tiny_checkpoint):
    copy_checkpoint(ckpt_home, tiny_checkpoint, "b-copy")
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _picker(pilot, app)
        assert _row_names(screen) == ["b-copy", tiny_checkpoint]
        await pilot.press("s")  # sort by the next column (preset)
        await pilot.pause()
        table = screen.query_one("#ckpt-table", DataTable)
        assert screen.sort_index == 1 and "\u25b2" in table.columns["preset"].label.plain
        screen.sort_index, screen.sort_reverse = 0, True  # as a second click on the name header does
        screen._fill()
        assert _row_names(screen) == [tiny_checkpoint, "b-copy"]
        # rename (an invalid name is refused in the dialog)
        _cursor_to(screen, "b-copy")
        await pilot.press("r")
        await pilot.pause()
        prompt = app.screen
        prompt.query_one(Input).value = "bad/name"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is prompt and "invalid checkpoint name" in plain(prompt.query_one("#prompt-error"))
        prompt.query_one(Input).value = "renamed"
        await pilot.press("enter")
        await wait_until(pilot, lambda: sorted(_row_names(screen)) == ["renamed", tiny_checkpoint], 10, "the renamed row")
        assert ckpt_home.exists("renamed") and not ckpt_home.exists("b-copy")
        # delete asks first; "n" keeps it, "y" deletes it
        _cursor_to(screen, "renamed")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert ckpt_home.exists("renamed")
        _cursor_to(screen, "renamed")
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: _row_names(screen) == [tiny_checkpoint], 10, "the row to go")
        assert not ckpt_home.exists("renamed")


async def test_resume_training_from_picker(ckpt_home, tiny_checkpoint):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _picker(pilot, app)
        _cursor_to(screen, tiny_checkpoint)
        await pilot.press("t")
        await pilot.pause()
        app.screen.query_one(Input).value = "10"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.run_state.status in ("finished", "failed"), 240, "the resumed run")
        assert app.run_state.status == "finished", app.run_state.error
        assert app.run_state.started.start_step == 8 and app.run_state.step.step == 10
        assert ckpt_home.get(tiny_checkpoint).meta["steps"] == 10


async def test_hf_cache_model_is_chatable(ckpt_home, tiny_checkpoint, tmp_path, monkeypatch):
    """Models in the local Hugging Face cache get their own table and load with from_folder."""
    import shutil

    from engine.store import checkpoints

    snapshot = tmp_path / "hub" / "models--someone--tiny-gpt" / "snapshots" / "abc123"
    shutil.copytree(ckpt_home.root / tiny_checkpoint, snapshot)
    shutil.rmtree(snapshot / "resume")
    found = [{"repo_id": "someone/tiny-gpt", "path": str(snapshot), "size_bytes": 1234}]
    monkeypatch.setattr(checkpoints, "hf_cache_models", lambda: found)
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _picker(pilot, app)
        hf = screen.query_one("#hf-table", DataTable)
        await wait_until(pilot, lambda: hf.row_count == 1 and hf.get_row_at(0)[0].plain == "someone/tiny-gpt", 30, "the HF table")
        hf.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.model_status in ("ready", "failed"), 120, "the HF model to load")
        assert app.model_status == "ready", app.model_error
        assert app.active_name == "someone/tiny-gpt" and app.active_kind == "folder"
        assert app.screen is app.views["chat"]


async def test_model_that_cannot_load_is_reported(fresh_dirs, tmp_path):
    (tmp_path / "empty-model").mkdir()
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(200, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        app.activate_folder(str(tmp_path / "empty-model"), "someone/empty")
        await wait_until(pilot, lambda: app.model_status == "failed", 60, "the failure")
        assert "no safetensors weights" in app.model_error
        status = plain(app.views["chat"].query_one("#chat-status"))
        assert "someone/empty" in status and "no safetensors" in status
        assert app.chat_model is None and app.is_running
