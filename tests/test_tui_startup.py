"""Start-up: first frame before torch, first run, restoring settings, quitting from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from test_tui_support import anyio_backend, ckpt_home, plain, run_from_palette, wait_until  # noqa: F401
from engine.training.config import FIRST_RUN_BUDGET_S, FIRST_RUN_DATASET
from tui.app import EXIT_AFTER_FIRST_FRAME_ENV, FIRST_FRAME_ENV, MiniGPTApp
from tui.widgets.turns import ChatInput

pytestmark = pytest.mark.anyio
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_first_frame_paints_before_torch_loads(tmp_path, fresh_dirs):
    """Run the real command in a pseudo-terminal-less subprocess with the first-frame hook."""
    marker = tmp_path / "first-frame"
    env = dict(os.environ, **{FIRST_FRAME_ENV: str(marker), EXIT_AFTER_FIRST_FRAME_ENV: "1", "PYTHONPATH": ROOT})
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tui.__main__ import main; main()"],
        env=env, cwd=ROOT, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    stamp, torch_loaded = marker.read_text().split()
    assert torch_loaded == "0", "torch was imported before the first frame"
    assert float(stamp) - t0 < 10


async def test_first_run_offers_default_training(fresh_dirs):
    """No checkpoint: the chat says so, and one key starts the default run (quit right away)."""
    import asyncio

    app = MiniGPTApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        chat = app.views["chat"]
        assert "No checkpoint yet" in plain(chat.query_one("#welcome-text"))
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 5, "focus on the chat input")
        await pilot.press("enter")  # Enter on the empty input takes the offer
        await wait_until(pilot, lambda: app.screen is app.views.get("training"), 10, "the training screen")
        config = app.run_state.config
        # the engine's defaults for the first-run budget (no GPU here: the CPU's 3 minutes)
        assert (config.preset, config.max_steps, config.dataset, config.tokenizer) == (MiniGPTApp.DEFAULT_PRESET, None, FIRST_RUN_DATASET, None)
        assert FIRST_RUN_DATASET == "chitchat"  # a chat model, on conversations shipped offline
        assert config.time_budget == FIRST_RUN_BUDGET_S["cpu"] == 180
        assert app.run_state.running
        quitting = asyncio.create_task(app.run_action("quit"))
        await wait_until(pilot, lambda: not app.is_running, 120, "quit")
        await quitting
    assert app.return_code == 0


@pytest.mark.slow
async def test_first_run_trains_and_quit_saves(fresh_dirs):
    """The default run (a chat model on the offline chitchat conversations) takes steps; quitting saves it, exit code 0."""
    app = MiniGPTApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        chat = app.views["chat"]
        assert "No checkpoint yet" in plain(chat.query_one("#welcome-text"))
        assert chat.query_one("#welcome").display
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 5, "focus on the chat input")
        await pilot.press("enter")  # Enter on the empty input takes the offer  # the one key
        await wait_until(pilot, lambda: app.screen is app.views.get("training"), 10, "the training screen")
        config = app.run_state.config
        assert config.preset == MiniGPTApp.DEFAULT_PRESET and config.time_budget == FIRST_RUN_BUDGET_S["cpu"]
        assert config.dataset == "chitchat"  # the first run trains a chat model
        await wait_until(pilot, lambda: app.run_state.step is not None or app.run_state.status == "failed", 240, "a step")
        assert app.run_state.status != "failed", app.run_state.error
        assert any("chitchat" in line for line in app.run_state.log)  # what it trains on is told
        step = app.run_state.step
        print(f"default run: step {step.step}/{step.total_steps}, {step.tokens_per_s:.0f} tok/s, eta {step.eta_s:.0f}s")
        # Ctrl+Q waits for the save (stop takes effect after the step, then eval + save), so
        # run the quit action as a task instead of through pilot.press (which waits briefly).
        import asyncio

        quitting = asyncio.create_task(app.run_action("quit"))
        await wait_until(pilot, lambda: not app.is_running, 300, "quit")
        await quitting
    assert app.return_code == 0
    from engine.store.checkpoints import CheckpointStore

    infos = CheckpointStore().list()
    assert len(infos) == 1 and infos[0].ok and infos[0].meta["steps"] >= 1  # saved before quitting
    assert infos[0].name.startswith("seed-chitchat-"), infos[0].name  # named after the data it read
    assert infos[0].meta["chat"] is True  # a chat model
    assert infos[0].meta["tokenizer_spec"].startswith("bpe:")  # the engine's default tokenizer


async def test_quit_while_reply_streams(ckpt_home, tiny_checkpoint):
    from test_tui_support import FakeChat

    app = MiniGPTApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "model")
        app.chat_model = FakeChat(["x "] * 1000, delay=0.01)
        inp = app.screen.query_one(ChatInput)
        inp.load_text("talk")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.views["chat"].reply is not None and app.views["chat"].reply.text, 10, "streaming")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, 30, "quit")
    assert app.return_code == 0


async def test_settings_restored_and_missing_checkpoint_reported(ckpt_home, tiny_checkpoint):
    from engine.store.settings import Sampling, Settings, save_settings

    save_settings(Settings(active_checkpoint=tiny_checkpoint, sampling=Sampling(temperature=0.3, seed=5), theme="textual-light"))
    app = MiniGPTApp(checkpoint="no-such-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "model")
        assert app.active_name == tiny_checkpoint  # --checkpoint missing: told, then the last active one
        assert app.settings.sampling.temperature == 0.3 and app.settings.sampling.seed == 5
        assert app.theme == "textual-light"
        assert any("no-such-model" in str(n.message) for n in app._notifications)
        await pilot.press("f7")
        assert app.theme == "textual-dark"
    from engine.store.settings import load_settings

    assert load_settings().theme == "textual-dark"


async def test_screens_keys_and_palette(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
        for key, view in (("f2", "training"), ("f3", "checkpoints"), ("f1", "chat")):
            await pilot.press(key)
            await wait_until(pilot, lambda: app.screen is app.views.get(view), 10, view)
        from tui.screens.help import HelpScreen

        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), 10, "the help screen")
        await pilot.press("escape")
        # the command palette knows the screens
        await run_from_palette(pilot, "checkpoints", "Checkpoints")
        await wait_until(pilot, lambda: app.screen is app.views.get("checkpoints"), 10, "palette -> checkpoints")


def test_bench_first_frame_in_a_pty(fresh_dirs):
    """bench/app_latency's measurement: the installed command in a pseudo-terminal."""
    sys.path.insert(0, ROOT)
    from bench.app_latency import chat_floor_keys, first_frame

    ms, torch_loaded = first_frame("no-such-checkpoint")
    assert 0 < ms < 20_000 and not torch_loaded
    # the floors: a bare Textual app, and one with the chat screen's widgets and footer keys
    keys = chat_floor_keys()
    assert {"f1", "f2", "f3", "ctrl+n", "ctrl+q"} <= {key for key, _ in keys} and "f7" not in {key for key, _ in keys}
    for floor_keys in (None, keys):
        ms, torch_loaded = first_frame(None, floor_keys=floor_keys)
        assert 0 < ms < 20_000 and not torch_loaded


async def test_footer_rebuilds_only_when_its_keys_change(fresh_dirs, monkeypatch):
    """Textual's footer rebuilt every key on each focus change (three times before the first
    frame); the app's footer rebuilds when what it shows changes."""
    from textual.widgets._footer import FooterKey

    from tui.widgets.footer import AppFooter

    composed = []
    compose = AppFooter.compose

    def counting_compose(self):
        composed.append(self._what_it_shows())
        yield from compose(self)

    monkeypatch.setattr(AppFooter, "compose", counting_compose)
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 10, "focus on the chat input")
        await pilot.pause()
        footer = app.screen.query_one(AppFooter)
        keys = {key.key: key for key in footer.query(FooterKey)}
        assert {"ctrl+n", "f1", "f2", "ctrl+p"} <= set(keys)
        # the keys are styled as Textual's footer styles them: the palette key compact, the others not
        assert not keys["ctrl+n"].has_class("-compact") and keys["ctrl+p"].has_class("-compact")
        # an empty footer before the bindings are ready, the keys, and the keys once the input
        # has focus (its F6 moves the app's); Textual's own footer: 6 here
        assert len(composed) <= 3, composed
        app.set_focus(None)
        await pilot.pause()
        before = len(composed)
        conversation = app.screen.query_one("#conversation")
        for _ in range(3):  # focus moves between widgets that show the same keys: no rebuild
            conversation.focus()
            await pilot.pause()
            app.set_focus(None)
            await pilot.pause()
        assert len(composed) == before, composed[before:]
        app.set_keymap({"chat.new": "ctrl+b"})  # a key the footer shows changed: rebuilt
        await wait_until(pilot, lambda: "ctrl+b" in {key.key for key in footer.query(FooterKey)}, 5, "the new key shown")
        assert "ctrl+n" not in {key.key for key in footer.query(FooterKey)}
        assert len(composed) == before + 1


async def test_footer_shows_the_screens_and_help_first_at_80_columns(fresh_dirs):
    """Textual lists the focused widget's keys, then the screen's, then the app's: at 80 columns
    the chat's footer had no F1-F3 and the training screen's neither F1 nor Help, so a new user
    who stopped the first run saw no way back to the chat.  Every screen's footer starts with
    F1-F3 and Help, all four on screen."""
    from textual.widgets._footer import FooterKey

    from tui.widgets.footer import AppFooter

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 10, "focus on the chat input")
        for key, view in (("f2", "training"), ("f3", "checkpoints"), ("f1", "chat")):
            await pilot.press(key)
            await wait_until(pilot, lambda: app.screen is app.views.get(view), 10, view)
            await pilot.pause()
            footer = app.screen.query_one(AppFooter)
            keys = [k for k in footer.query(FooterKey) if not k.has_class("-command-palette")]
            assert [k.key for k in keys[:4]] == ["f1", "f2", "f3", "f6"], (view, [k.key for k in keys])
            palette = footer.query_one(".-command-palette", FooterKey)
            assert all(k.region.width and k.region.right <= palette.region.x for k in keys[:4]), view
            # then the screen's own keys, before the app's others (F4, F5, Ctrl+Q)
            owners = [app.screen.active_bindings[k.key].node is app for k in keys[4:]]
            assert owners == sorted(owners), (view, [k.key for k in keys])
            if view == "checkpoints":  # the focused table's Enter: shown, right after Help
                assert app.focused.id == "ckpt-table" and keys[4].key == "enter", [k.key for k in keys]
