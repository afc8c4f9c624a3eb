"""Snapshots (pytest-textual-snapshot) pin the look of each screen at 80x24.

Deterministic by construction: fixed terminal size, fake checkpoints with fixed metadata and
sizes, no model loading, a fake model with fixed statistics, no timestamps, no blinking cursor,
no text cursor, nothing that depends on the machine (precision, CPU) or on earlier tests (each
test has its own data and config dirs; focus never rests on a button whose Enter would start a real run).
Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from test_tui_support import FakeChat, make_broken, make_fake, wait_until
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput

SIZE = (80, 24)


@pytest.fixture
def fixed_store(fresh_dirs, monkeypatch):
    from engine.store import checkpoints
    from engine.store.checkpoints import CheckpointStore

    monkeypatch.setattr(checkpoints, "hf_cache_models", lambda: [])
    store = CheckpointStore()
    store.root.mkdir(parents=True)
    make_fake(store, "bible-tiny")
    make_fake(
        store, "wiki-seed", preset="seed", params=7_100_000, dataset="wikitext (wikitext-2-raw-v1)", steps=600,
        val_loss=4.1234, perplexity=61.8, bits_per_byte=1.532, created="2026-01-03T10:00:00+00:00",
    )
    make_broken(store, "half-written")
    return store


async def _settle(pilot) -> None:
    """Workers done, and no cursor blinking: a blinking cursor is drawn or not depending on
    the moment of the screenshot (0.5 s phases), which made these snapshots flaky."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    widgets = list(pilot.app.screen.query("Input, TextArea"))
    for widget in widgets:  # stop the blink timers first: a tick already due would flip the cursor later
        timer = getattr(widget, "blink_timer", None) or getattr(widget, "_blink_timer", None)
        if timer is not None:
            timer.stop()
    await pilot.pause(0.1)
    for widget in widgets:
        widget.cursor_blink = False
    # No text cursor in the picture at all (where focus is, is asserted by the tests themselves):
    # a TextArea's cached lines could still show the last blink phase.
    pilot.app.set_focus(None)
    await pilot.pause()
    await pilot.pause()


def test_snapshot_first_run_chat(fresh_dirs, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 5, "focus on the chat input")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_chat_conversation(fresh_dirs, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        app.chat_model, app.active_name, app.model_status = FakeChat(["Once ", "upon ", "[bold]a[/bold] ", "time."]), "wiki-seed", "ready"
        chat = app.views["chat"]
        for text in ("Tell me a story", "Go on\nplease"):
            inp = chat.query_one("#chat-input")
            inp.load_text(text)
            await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
            await pilot.press("enter")
            await wait_until(pilot, lambda: chat.reply is None, 10, "reply")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_chat_versions(fresh_dirs, snap_compare):
    """The version markers: an edited first message (2/2) and a reply regenerated twice (3/3,
    the turn the version keys switch)."""

    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        app.active_name, app.model_status = "wiki-seed", "ready"
        chat = app.views["chat"]
        inp = chat.query_one("#chat-input")
        for keys, answer in [("Tell me a story", "Once upon a time."), ("ctrl+g", "There was a lion."),
                             ("ctrl+r", "A lion lived in Kenya."), ("ctrl+r", "Lions live in prides.")]:
            app.chat_model = FakeChat([answer])
            if keys.startswith("ctrl+"):
                await pilot.press(keys)
                await pilot.pause()
                if keys == "ctrl+g":
                    inp.load_text("Tell me a short story")
                    await pilot.press("enter")
            else:
                inp.load_text(keys)
                await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
                await pilot.press("enter")
            await wait_until(pilot, lambda: chat.reply is None and chat.turns and chat.turns[-1].content == answer, 10, "reply")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


MARKDOWN_REPLY = [
    "## Install\n\n",
    "1. Make a *virtual* environment\n",
    "2. Install it with `pip`:\n\n",
    "```bash\n",
    "pip install -e .\n",
    "minigpt-tui --checkpoint t1\n",
    "```\n\n",
    "- **Esc** stops a reply\n",
    "- [bold]not markup[/bold]\n\n",
    "> Replies are Markdown;\n",
    "> F9 shows the raw text.",
]


def test_snapshot_markdown_reply(fresh_dirs, snap_compare):
    """A reply rendered as Markdown: a heading, an ordered list with inline code, a fenced code
    block (highlighted), a bullet list with bold and literal brackets, a quote."""

    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        app.chat_model, app.active_name, app.model_status = FakeChat(MARKDOWN_REPLY), "wiki-seed", "ready"
        chat = app.views["chat"]
        inp = chat.query_one("#chat-input")
        inp.load_text("How do I install it?")
        await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.reply is None, 10, "reply")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_training_form(fresh_dirs, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f2")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_checkpoint_picker(fixed_store, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f3")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_sampling_dialog(fresh_dirs, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f4")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def test_snapshot_light_theme_training(fresh_dirs, snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.model_status == "none", 30, "start-up")
        await pilot.press("f7")  # light theme
        await pilot.press("f2")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)


def _run_events():
    """A fixed run, as the engine reports one: start, 40 steps, two evaluations with samples."""
    import math

    from engine import events as ev

    out = [ev.TrainStarted("wiki-seed", "seed", "wikitext (wikitext-2-raw-v1)", "bpe:8192", 2_250_000, "cpu", "fp32", 40, 2048, 2_000_000, 200_000)]
    for step in range(1, 41):
        loss = 9.0 * math.exp(-step / 12) + 4.0 + 0.3 * math.sin(step)
        out.append(ev.TrainStep(step, 40, loss, 1e-3 * min(1.0, step / 8), 4_000.0, step * 2048, step * 0.5, (40 - step) * 0.5, step / 100,
                                grad_norm=round(2.0 / (1 + step / 4), 3)))
        if step in (20, 40):
            out.append(ev.TrainEval(step, loss + 0.2, math.exp(loss + 0.2), 1.9 - step / 100))
            out.append(ev.TrainSample(step, "The history of", " the city was the first of the new"))
    return out


def test_snapshot_training_live(fresh_dirs, snap_compare):
    """The live view of a run: chart against tokens seen, learning rate, samples history."""
    from tui.messages import TrainEventMessage, TrainProgress
    from tui.state.run_state import RunState

    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.views.get("training") is not None, 10, "the training screen")
        app.run_state = RunState(status="starting", name="wiki-seed")
        for event in _run_events():
            if type(event).__name__ == "TrainStep":
                app.run_state.record_step(event)
                app.post_message(TrainProgress(event))
            else:
                app.post_message(TrainEventMessage(event))
            await pilot.pause()
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=(100, 30), run_before=run_before)


def test_snapshot_saved_chats_search(fresh_dirs, snap_compare):
    from tui.store.conversations import ConversationStore, Turn

    def fill(app) -> None:
        store = ConversationStore()
        for title, text in (("apples", "I like apples and pears"), ("rivers", "The Thames and the Seine")):
            cid = store.create(title, "wiki-seed")
            store.add(cid, Turn("user", text))
            store.add(cid, Turn("assistant", "Indeed.", checkpoint="wiki-seed"))
        # fixed times: the list shows them
        store.db.execute("UPDATE conversations SET created = '2026-01-02T03:04:05+00:00', updated = '2026-01-02T03:04:05+00:00'")
        store.db.commit()
        store.close()

    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        await pilot.press("f5")
        await wait_until(pilot, lambda: getattr(app.screen, "loaded", None) == "", 10, "the list")
        await pilot.press("slash", *"thames")
        await wait_until(pilot, lambda: app.screen.loaded == "thames", 10, "the search")
        await _settle(pilot)

    app = MiniGPTApp(autoload=False)
    fill(app)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_token_inspector(fresh_dirs, snap_compare):
    """The inspector over a fixed reply: tokens coloured by probability, one selected, its top 10."""
    from engine.events import TokenChoice
    from tui.screens.inspector import InspectorScreen

    words = ["The", " city", " was", " built", " on", " a", " hill", "."]
    vocab = words + [" town", " river", " is", " were", " in", " the", " an", " high", " mountain", ",", " of", " and"]
    choices = []
    for i, word in enumerate(words):
        probs = [0.62 / (i + 1)] + [0.3 / (i + 1) / (r + 1) for r in range(9)]
        alternatives = [(i, probs[0])] + [((i + 8 + r) % len(vocab), probs[r + 1]) for r in range(9)]
        choices.append(TokenChoice(token_id=i, prob=probs[0], alternatives=tuple(alternatives)))

    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        app.push_screen(InspectorScreen(choices, lambda t: vocab[t], "Token inspector \u00b7 wiki-seed"))
        await pilot.pause()
        await pilot.press("right", "right", "right")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=(100, 30), run_before=run_before)


def test_snapshot_compare(fresh_dirs, snap_compare):
    """Compare: one prompt, two models side by side, each reply with its own speed."""

    async def run_before(pilot):
        from tui.screens.compare import CompareScreen

        app = pilot.app
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        ready = {
            "wiki-seed": FakeChat(["The ", "river ", "flows ", "north."], name="wiki-seed"),
            "bible-tiny": FakeChat(["And ", "the ", "waters ", "were ", "divided."], name="bible-tiny"),
        }
        screen = CompareScreen(("wiki-seed", "bible-tiny"), ready=ready)
        await app.push_screen(screen)
        await wait_until(pilot, lambda: all(m is not None for m in screen.models), 10, "both models")
        inp = screen.query_one("#compare-input")
        inp.load_text("Where does the water go?")
        await wait_until(pilot, lambda: app.focused is inp, 5, "focus on the input")
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.streaming, 10, "both replies")
        await _settle(pilot)

    assert snap_compare(MiniGPTApp(autoload=False), terminal_size=SIZE, run_before=run_before)
