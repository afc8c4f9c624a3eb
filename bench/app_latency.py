"""App latency: how soon the app paints, and how soon a reply starts on screen.

``measure_app(checkpoint)`` -> {"first_frame_ms", "first_token_ms", ...}

* first_frame_ms: launching ``minigpt-tui --checkpoint NAME`` (a fresh process, in a
  pseudo-terminal of 80x24) to its first painted frame.  The app writes a timestamp once the
  first frame is painted when ``MINIGPT_TUI_FIRST_FRAME`` names a file, and exits right after
  with ``MINIGPT_TUI_EXIT_AFTER_FIRST_FRAME=1``.  It also records whether torch was imported
  by then (it must not be).  Median of ``runs``, alternating with two floors launched the same
  way (bench/textual_floor.py): a bare Textual app, and one with the chat screen's widgets and
  footer keys (what Textual alone takes to paint that screen).
* first_token_ms: pressing Enter in the chat (model already loaded) to the first piece of the
  reply being put on screen, driven with Textual's Pilot in this process.  Median of ``runs``.
* onscreen_tokens_per_s / headless_tokens_per_s / onscreen_ratio: a 90-token reply as the app
  shows it (first piece on screen to the whole reply on screen; the app decodes it in its child
  process once that is ready, as it does for a user) against the same reply decoded without a
  UI (``ChatModel.stream`` on a thread, the same weights, as the CLI decodes), alternating (the
  UI must not starve the decode); the ratio is the median of the rounds' ratios.

Uses the current environment's checkpoint store (XDG variables relocate it).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _command(checkpoint: str | None, floor_keys: list[list[str]] | None = None) -> list[str]:
    if checkpoint is None:  # a floor: a bare Textual app launched the same way
        chat = ["--chat", json.dumps(floor_keys)] if floor_keys is not None else []
        return [sys.executable, "-m", "bench.textual_floor", *chat]
    exe = Path(sys.executable).with_name("minigpt-tui")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "tui"]
    return base + ["--checkpoint", checkpoint]


def chat_floor_keys() -> list[list[str]]:
    """The keys the chat screen's footer shows (key, description), for the chat-shaped floor."""
    from tui.app import MiniGPTApp
    from tui.screens.chat import ChatScreen

    return [[b.key, b.description] for b in (*MiniGPTApp.BINDINGS, *ChatScreen.BINDINGS) if b.show]


def first_frame(checkpoint: str | None, timeout: float = 60.0, floor_keys: list[list[str]] | None = None) -> tuple[float, bool]:
    """(ms from launch to the first painted frame, torch imported by then) in a pty.
    ``checkpoint`` None: a bare Textual app of bench/textual_floor.py instead (with
    ``floor_keys``, the one with the chat screen's widgets and these footer keys)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "first-frame"
        env = dict(os.environ, MINIGPT_TUI_FIRST_FRAME=str(marker), MINIGPT_TUI_EXIT_AFTER_FIRST_FRAME="1", TERM="xterm-256color")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user's Python: bytecode is cached after the first launch
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

        def drain() -> None:  # keep the terminal's buffer from filling up
            while True:
                try:
                    if not os.read(master, 65536):
                        return
                except OSError:
                    return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        t0 = time.time()
        proc = subprocess.Popen(_command(checkpoint, floor_keys), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp, start_new_session=True)
        os.close(slave)
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        if not marker.exists():
            raise RuntimeError(f"the app exited ({proc.returncode}) without painting a frame")
        stamp, torch_loaded = marker.read_text().split()
        return (float(stamp) - t0) * 1000.0, torch_loaded == "1"


async def _first_tokens(checkpoint: str, runs: int) -> list[float]:
    from engine.store.settings import Sampling

    from tui.app import MiniGPTApp
    from tui.widgets.turns import TurnView

    shown_at: list[float] = []
    finished_at: list[float] = []
    original, original_finish = TurnView.set_text, TurnView.finish

    def spy(self, text):
        original(self, text)
        if text and not shown_at:
            shown_at.append(time.perf_counter())

    def spy_finish(self, *args, **kwargs):
        original_finish(self, *args, **kwargs)
        finished_at.append(time.perf_counter())

    TurnView.set_text, TurnView.finish = spy, spy_finish
    # Leave the user's settings and conversations alone: a throw-away config dir and database.
    scratch = tempfile.TemporaryDirectory(prefix="minigpt-bench-app-")
    old_config = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = scratch.name
    try:
        app = MiniGPTApp(checkpoint=checkpoint, conversations_path=Path(scratch.name) / "conversations.sqlite3")
        times = []
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 300
            while app.model_status != "ready":
                if app.model_status == "failed" or time.monotonic() > deadline:
                    raise RuntimeError(f"cannot load '{checkpoint}': {app.model_error or 'timed out'}")
                await pilot.pause(0.05)
            app.settings = app.settings.__class__(
                active_checkpoint=app.settings.active_checkpoint, sampling=Sampling(max_new_tokens=16, seed=0)
            )
            chat = app.views["chat"]
            for i in range(runs + 1):  # the first one warms up (first forward pass allocations)
                await pilot.press("ctrl+n")
                await pilot.pause()
                inp = chat.query_one("#chat-input")
                inp.load_text("The meaning of life is")
                inp.focus()
                shown_at.clear()
                t0 = time.perf_counter()
                await pilot.press("enter")
                deadline = time.monotonic() + 120
                while chat.reply is not None and not shown_at and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                await pilot.pause()  # the frame with it is painted
                if not shown_at:
                    raise RuntimeError("the reply had no text")
                if i:
                    times.append((shown_at[0] - t0) * 1000.0)
                while chat.reply is not None:
                    await pilot.pause(0.05)
            onscreen = await _onscreen_rate(app, pilot, chat, shown_at, finished_at, runs)
            await app.run_action("quit")
        return times, onscreen
    finally:
        TurnView.set_text, TurnView.finish = original, original_finish
        if old_config is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = old_config
        scratch.cleanup()


ONSCREEN_PROMPT = "The history of the city begins in the year"
ONSCREEN_TOKENS = 90


async def _onscreen_rate(app, pilot, chat, shown_at: list, finished_at: list, runs: int) -> dict:
    """Tokens/s of a reply as the screen shows it (first piece painted to the whole reply
    painted) against the same reply decoded headless (no UI), alternating, same weights, same
    prompt ids and seed (so the same tokens)."""
    from engine.events import GenerationFinished
    from engine.generation.chat_model import ChatModel
    from engine.store.settings import Sampling
    from tui.state.active_model import decode_process_wanted

    model = app.chat_model
    await asyncio.to_thread(model.warm_up)  # idempotent: the app already started it after the load
    deadline = time.monotonic() + 120
    while decode_process_wanted() and not model.in_child_process and not model.process_note and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the app's decode process loads the model after the warm-up
    # headless: the same model decoding on a thread of a process with no UI, as the CLI does
    plain = ChatModel(model=model.model, tokenizer=model.tokenizer, name=model.name, device=model.device, dtype=model.dtype)
    plain.warm_up()
    app.settings = app.settings.__class__(
        active_checkpoint=app.settings.active_checkpoint,
        sampling=Sampling(temperature=0.8, top_k=50, top_p=1.0, repetition_penalty=1.0, max_new_tokens=ONSCREEN_TOKENS, seed=0),
    )
    ids = model.encode_chat([{"role": "user", "content": ONSCREEN_PROMPT}])
    headless, onscreen, same, ui_cpu = [], [], True, []
    for i in range(runs + 1):  # the first round warms up
        def decode():
            return [e for e in plain.stream(ids, app.settings.sampling) if isinstance(e, GenerationFinished)][-1]

        done = await asyncio.to_thread(decode)
        await pilot.press("ctrl+n")
        await pilot.pause()
        inp = chat.query_one("#chat-input")
        inp.load_text(ONSCREEN_PROMPT)
        inp.focus()
        await pilot.pause()
        shown_at.clear()
        finished_at.clear()
        ui_cpu0 = time.thread_time()
        await pilot.press("enter")
        deadline = time.monotonic() + 120
        while (chat.reply is not None or not finished_at) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the spies hold the times: polling often would itself take the GIL
        ui_cpu.append(time.thread_time() - ui_cpu0)
        await pilot.pause()
        reply = chat.turns[-1] if chat.turns else None
        same = same and reply is not None and reply.content == done.text
        if i and shown_at and finished_at and done.new_tokens > 1 and finished_at[-1] > shown_at[0]:
            onscreen.append((done.new_tokens - 1) / (finished_at[-1] - shown_at[0]))
            headless.append(done.tokens_per_s)
    on = statistics.median(onscreen) if onscreen else None
    head = statistics.median([h for h in headless if h]) if any(headless) else None
    # each on-screen reply against the headless one decoded just before it: the VM's speed
    # drifts between rounds, so the ratio is the median of the rounds' ratios
    paired = [o / h for o, h in zip(onscreen, headless) if h]
    return {
        "onscreen_tokens_per_s": on,
        "headless_tokens_per_s": head,
        "onscreen_ratio": statistics.median(paired) if paired else None,
        "onscreen_ratio_runs": [round(r, 3) for r in paired],
        "onscreen_decode_path": model.decode_path,
        "onscreen_decode_process": model.in_child_process,
        "onscreen_decode_process_note": model.process_note,
        "onscreen_same_text": same,
        "onscreen_new_tokens": done.new_tokens,
        "onscreen_ui_thread_cpu_ms": round(statistics.median(ui_cpu) * 1000, 1),
    }


def measure_app(checkpoint: str, runs: int = 3) -> dict:
    keys = chat_floor_keys()
    first_frame(checkpoint)  # untimed: the first launch after an install compiles the bytecode
    first_frame(None)
    first_frame(None, floor_keys=keys)
    frames, floor, chat_floor = [], [], []
    for _ in range(runs):  # alternating: the app and the bare Textual apps, launched the same way
        frames.append(first_frame(checkpoint))
        floor.append(first_frame(None)[0])
        chat_floor.append(first_frame(None, floor_keys=keys)[0])
    tokens, onscreen = asyncio.run(_first_tokens(checkpoint, runs))
    return {
        "first_frame_ms": round(statistics.median(f[0] for f in frames), 1),
        "first_frame_runs_ms": [round(f[0], 1) for f in frames],
        "textual_floor_first_frame_ms": round(statistics.median(floor), 1),
        "textual_chat_floor_first_frame_ms": round(statistics.median(chat_floor), 1),
        "app_minus_chat_floor_ms": round(statistics.median(f[0] - c for f, c in zip(frames, chat_floor)), 1),
        "torch_loaded_before_first_frame": any(f[1] for f in frames),
        "first_token_ms": round(statistics.median(tokens), 1),
        "first_token_runs_ms": [round(t, 1) for t in tokens],
        **onscreen,
        "method": "first frame: fresh process in an 80x24 pty, timestamp hook, bytecode cached (one untimed launch first), "
        "alternating with two bare Textual apps (bench/textual_floor.py: one line of text, the floor; and the chat screen's "
        "widgets with the same footer keys, the chat floor; app_minus_chat_floor_ms: median of the per-round differences); first token: Pilot, Enter to reply text on screen; "
        f"on-screen tokens/s: Pilot, {ONSCREEN_TOKENS}-token reply (top-k 50, seed), first piece shown to the whole reply "
        "shown, vs the same reply decoded headless (ChatModel.stream on a thread, no UI), alternating; the ratio: median of "
        "each round's on-screen / headless",
    }


if __name__ == "__main__":
    print(json.dumps(measure_app(sys.argv[1] if len(sys.argv) > 1 else "quality"), indent=2))
