"""Make the README's SVG screenshots of the three screens.

    python -m tui.screenshots [OUT_DIR]      (default: assets/)

Runs the real app headless in a throw-away data/config dir: trains a short tiny base model
(built-in corpus) and then a tiny chat model (chitchat conversations) from the training screen,
offline, chats with the chat model under a system prompt (and regenerates the last reply: a
second version), adds a damaged checkpoint folder (to
show how broken ones are listed) and opens the checkpoint picker.
Writes screen-chat.svg, screen-training.svg and screen-checkpoints.svg.  About a minute on a CPU.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

SIZE = (100, 30)
STEPS = "300"  # the chat model: enough for replies in the corpus's style


async def _wait(pilot, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.1)


async def _shoot(out: Path) -> list[Path]:
    from textual.widgets import Input, Select

    from engine.store.settings import Sampling, Settings, save_settings

    from tui.app import MiniGPTApp

    save_settings(Settings(sampling=Sampling(max_new_tokens=40, seed=7)))
    app = MiniGPTApp()
    written = []
    async with app.run_test(size=SIZE) as pilot:
        await _wait(pilot, lambda: app.model_status == "none", 60)
        await pilot.press("f2")
        await _wait(pilot, lambda: app.screen is app.views.get("training"), 10)
        screen = app.screen
        # a short base run first, so the picker lists a text model beside the chat model
        screen.query_one("#f-stage", Select).value = "base"
        screen.query_one("#f-name", Input).value = "tiny-bible"
        screen.query_one("#f-dataset", Input).value = "builtin"
        screen.query_one("#f-preset", Select).value = "tiny"
        screen.query_one("#f-steps", Input).value = "10"
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: app.run_state.status in ("finished", "failed"), 600)
        await _wait(pilot, lambda: app.model_status == "ready", 120)
        # then a chat model (the chat stage: the chitchat conversations)
        screen.query_one("#f-stage", Select).value = "chat"
        screen.query_one("#f-name", Input).value = "tiny-chat"
        screen.query_one("#f-dataset", Input).value = ""
        screen.query_one("#f-steps", Input).value = STEPS
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: app.run_state.status in ("finished", "failed"), 600)
        if app.run_state.status == "failed":
            raise RuntimeError(app.run_state.error)
        app.clear_notifications()
        await pilot.pause(0.5)
        written.append(Path(app.save_screenshot("screen-training.svg", str(out))))
        app.activate_checkpoint("tiny-chat")  # (the app switches by itself only when it had no model)
        await _wait(pilot, lambda: app.model_status == "ready" and app.active_name == "tiny-chat", 120)
        await pilot.press("f1")
        chat = app.views["chat"]
        chat.system_prompt = "You are a friendly [b]pen pal[/b]."  # as Ctrl+S sets it (shown literally)
        chat.show_system_prompt()
        for text in ("hi, how are you?", "what do you like to do on weekends?"):
            inp = chat.query_one("#chat-input")
            inp.load_text(text)
            inp.focus()
            await pilot.press("enter")
            await _wait(pilot, lambda: chat.reply is None, 60)
        # a second version of the last reply (Ctrl+R): its turn shows "2/2", the keys switch it
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: chat.reply is None and chat.turns[-1].versions == 2, 60)
        app.clear_notifications()
        await pilot.pause(0.5)
        written.append(Path(app.save_screenshot("screen-chat.svg", str(out))))
        # a damaged checkpoint folder, to show how the picker lists one
        from engine.store.checkpoints import CheckpointStore

        broken = CheckpointStore().root / "half-copied"
        broken.mkdir()
        (broken / "minigpt.json").write_text("{}")
        (broken / "config.json").write_text("{ not json")
        await pilot.press("f3")
        await app.workers.wait_for_complete()
        app.clear_notifications()
        await pilot.pause(0.5)
        written.append(Path(app.save_screenshot("screen-checkpoints.svg", str(out))))
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else Path(__file__).resolve().parent.parent / "assets").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minigpt-shots-") as tmp:
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            os.environ[var] = os.path.join(tmp, var.lower())
        os.environ.setdefault("MINIGPT_OFFLINE", "1")
        for path in asyncio.run(_shoot(out)):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
