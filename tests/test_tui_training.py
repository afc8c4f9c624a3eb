"""The training screen: form validation, a real tiny run from the app, a failed run."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select, Sparkline

from test_tui_support import anyio_backend, ckpt_home, plain, wait_until  # noqa: F401  (fixtures)
from tui.app import MiniGPTApp
from tui.messages import TrainProgress

pytestmark = pytest.mark.anyio


def _fill(screen, **values) -> None:
    for key, value in values.items():
        if key == "preset":
            screen.query_one("#f-preset", Select).value = value
        else:
            screen.query_one(f"#f-{key}", Input).value = value


async def _open_training(pilot, app):
    await wait_until(pilot, lambda: app.model_status in ("none", "ready"), 30, "start-up")
    await pilot.press("f2")
    await wait_until(pilot, lambda: "training" in app.views and app.screen is app.views["training"], 10, "training screen")
    return app.screen


def test_time_budget_field_makes_a_timed_run():
    from tui.screens.training import build_config

    config = build_config({"time": "3m", "dataset": "builtin", "preset": "tiny"})
    assert config.time_budget == 180.0 and config.max_steps is None
    assert build_config({"time": " "}).time_budget is None


async def test_form_validation_refuses_bad_values(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_training(pilot, app)
        for values, needle, field in [
            ({"steps": "abc"}, "steps", "steps"),
            ({"steps": "-5"}, "steps", "steps"),
            ({"lr": "5"}, "lr", "lr"),
            ({"name": "../evil"}, "invalid checkpoint name", "name"),
            ({"tokenizer": "bpe:x"}, "bpe:n with n a whole number", "tokenizer"),
            ({"time": "30"}, "time budget", "time"),
            ({"time": "soon"}, "time budget", "time"),
            ({"epochs": "0"}, "epochs", "epochs"),
        ]:
            _fill(screen, **{"name": "", "steps": "", "lr": "", "tokenizer": "", "time": "", "epochs": "", **values})
            await pilot.press("ctrl+r")
            await pilot.pause()
            error = plain(screen.query_one("#form-error"))
            assert error and needle in error.lower(), (values, error)
            assert screen.query_one(f"#f-{field}", Input).has_class("-invalid"), (values, error)
            marked = [inp.id for inp in screen.query("#train-grid Input") if inp.has_class("-invalid")]
            assert marked == [f"f-{field}"], (values, error, marked)  # the error's field, from the error itself
            assert app.run_state.status == "idle"


async def test_sample_history_wraps_to_its_width_at_80_columns(fresh_dirs):
    """RichLog renders each line at least 78 cells wide unless told otherwise: at 80 columns the
    samples' panel (~40 cells) cut every line instead of wrapping it."""
    from textual.widgets import RichLog

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_training(pilot, app)
        history = screen.query_one("#sample-history", RichLog)
        await wait_until(pilot, lambda: history.lines, 5, "the placeholder")
        width = history.scrollable_content_region.width
        assert 0 < width < 60
        assert all(line.cell_length <= width for line in history.lines)
        text = " ".join("".join(seg.text for seg in line).strip() for line in history.lines)
        assert text == "no sample yet: the model's words appear here at every evaluation"


async def test_tiny_run_from_the_app(fresh_dirs):
    """Start a run from the form; watch progress; the checkpoint appears; the chat gets it."""
    app = MiniGPTApp()
    steps_seen: list[int] = []
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await _open_training(pilot, app)
        assert app.model_status == "none"
        _fill(screen, name="from-app", dataset="builtin", preset="tiny", steps="6")
        await pilot.press("ctrl+r")

        def progressed():
            step = app.run_state.step
            if step is not None and (not steps_seen or steps_seen[-1] != step.step):
                steps_seen.append(step.step)
            return app.run_state.status in ("finished", "failed")

        await wait_until(pilot, progressed, 240, "the run to finish")
        assert app.run_state.status == "finished", app.run_state.error
        assert steps_seen and steps_seen[-1] == 6
        stats = plain(screen.query_one("#run-stats"))
        assert "step 6/6" in stats and "loss" in stats and "tok/s" in stats and "tokens seen" in stats
        assert " ran " in stats and " eta " not in stats  # no time left shown once it has ended
        assert "val loss" in plain(screen.query_one("#run-eval")) and "bits/byte" in plain(screen.query_one("#run-eval"))
        from textual.widgets import RichLog

        from tui.widgets.loss_chart import LossChart

        history = screen.query_one("#sample-history", RichLog)
        assert app.run_state.samples and any(f"step {s.step}:" in "".join(seg.text for seg in line) for line in history.lines for s in app.run_state.samples)
        chart = screen.query_one(LossChart)
        assert len(chart.train) == 6 and [t for t, _ in chart.train] == sorted(t for t, _ in chart.train)  # x: tokens seen
        assert chart.val and chart.val[-1][1] == app.run_state.eval.val_loss
        assert len(screen.query_one("#lr-spark", Sparkline).data) == 6
        await pilot.press("ctrl+l")
        assert chart.log_scale
        assert screen.query_one("#run-progress").progress == 6
        assert "builtin" in " ".join(app.run_state.log).lower()
        # the checkpoint is listed in the picker, and (first run) the chat now uses it
        await pilot.press("f3")
        await wait_until(pilot, lambda: app.views.get("checkpoints") is not None, 10, "the picker")
        picker = app.views["checkpoints"]
        await wait_until(pilot, lambda: "from-app" in [i.name for i in picker.infos], 10, "the new checkpoint listed")
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the new model to load")
        assert app.active_name == "from-app"
        # one save (at step 6) reloaded the list once: the run's end did not reload it again
        assert app.store_revision == 1


async def test_progress_messages_coalesce():
    from engine.events import TrainStep

    a = TrainProgress(TrainStep(1, 10, 1.0, 1e-3, 1.0, 1, 0.1, 1.0, 0.1))
    b = TrainProgress(TrainStep(2, 10, 1.0, 1e-3, 1.0, 1, 0.1, 1.0, 0.1))
    assert b.can_replace(a)
    from tui.messages import TrainEventMessage

    assert not b.can_replace(TrainEventMessage(object()))


async def test_failed_run_shows_error_not_traceback(fresh_dirs, tmp_path):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_training(pilot, app)
        _fill(screen, dataset=str(tmp_path / "no-such-corpus.txt"), preset="tiny", steps="2", name="doomed")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.run_state.status in ("failed", "finished"), 120, "the run to fail")
        assert app.run_state.status == "failed"
        shown = plain(screen.query_one("#run-error"))
        assert shown.startswith("Run failed:") and "Traceback" not in shown
        assert "no-such-corpus" in shown
        assert not screen.query_one("#start").disabled  # a new run can be started


async def test_pause_resume_and_stop_saves(fresh_dirs):
    from engine.store.checkpoints import CheckpointStore

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_training(pilot, app)
        _fill(screen, name="stoppable", dataset="builtin", preset="tiny", steps="5000")
        await pilot.press("ctrl+r")
        state = app.run_state
        await wait_until(pilot, lambda: state.step is not None or state.status == "failed", 120, "a first step")
        assert state.status == "running", state.error
        await pilot.pause()
        assert "Training: running" in plain(screen.query_one("#train-status"))
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: state.status == "paused", 60, "the pause")
        assert "paused" in plain(screen.query_one("#train-status"))
        assert " eta " in plain(screen.query_one("#run-stats"))  # while it runs (or pauses): the time left
        paused_at = state.step.step
        await pilot.pause(0.5)
        assert state.step.step == paused_at  # no progress while paused
        await pilot.press("f1", "f2")  # the UI stays responsive
        assert app.screen is screen
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: state.step.step > paused_at, 60, "progress after resuming")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: state.status in ("stopped", "failed"), 120, "the stop")
        assert state.status == "stopped" and state.result.saved
        await pilot.pause()
        stats = plain(screen.query_one("#run-stats"))
        assert " ran " in stats and " eta " not in stats, stats
        assert any("stopped at step" in line for line in state.log)
    info = CheckpointStore().get("stoppable")
    assert info.ok and info.meta["steps"] == state.result.step < 5000


@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
async def test_fine_tune_a_saved_checkpoint_from_the_form(ckpt_home, tiny_checkpoint):
    """"Start from" a saved checkpoint (by name) with a time budget: the run fine-tunes it
    (its weights, its tokenizer) and ends on the clock."""
    from engine.store.checkpoints import CheckpointStore

    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await _open_training(pilot, app)
        _fill(screen, name="tuned", dataset="builtin", preset="tiny", init=tiny_checkpoint, time="6s")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.run_state.status in ("finished", "failed"), 300, "the run")
        assert app.run_state.status == "finished", app.run_state.error
        config = app.run_state.config
        assert config.init == str(CheckpointStore().path(tiny_checkpoint)) and config.time_budget == 6.0
        assert app.run_state.started.params == CheckpointStore().get(tiny_checkpoint).meta["params"]
    assert CheckpointStore().get("tuned").ok
