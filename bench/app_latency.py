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
  UI must not starve the decode); the ratio is the median of the rounds' ratios.  The app shows
  replies as Markdown by default: these are its numbers.
* onscreen_plain_tokens_per_s / onscreen_markdown_tokens_per_s / markdown_onscreen_ratio: that
  same reply (same seed, same tokens) shown as raw text (F9: one literal Static, the view before
  Markdown) and as Markdown, each round both, in alternating order.  The ratio (target >= 0.9)
  is the median of the rounds' plain / Markdown time from Enter to the whole reply on screen:
  the reply's tokens/s counted from Enter, the same decode in both (counted from each view's
  first piece, Markdown would gain the few ms its body takes to appear: ``markdown_views``
  has that ratio too, the times to the first piece and the UI thread's CPU time).
* markdown_rich: the same comparison for a reply that is all Markdown (headings, lists, a
  table, code blocks: ``MARKDOWN_REPLY``), replayed through the app's real streaming path at a
  fixed pace (``ReplayChat``: a word-sized piece every ``REPLAY_INTERVAL_S``, sleeping between,
  so no decode competes with the UI): what Markdown costs where it has the most to parse.

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


async def _first_tokens(checkpoint: str, runs: int, onscreen_only: bool = False) -> tuple[list[float], dict]:
    from engine.store.settings import Sampling

    from tui.app import MiniGPTApp
    from tui.widgets.turns import TurnView

    shown_at: list[float] = []
    finished_at: list[float] = []
    original = TurnView.text_shown

    def spy(self):
        """The reply's text is on screen (a literal update, or the Markdown body caught up)."""
        original(self)
        if self.role != "assistant":
            return
        if self.text and not shown_at:
            shown_at.append(time.perf_counter())
        if not self.streaming:  # the reply is over and all of it is on screen
            finished_at.append(time.perf_counter())

    TurnView.text_shown = spy
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
            for i in range(0 if onscreen_only else runs + 1):  # the first one warms up (first forward pass allocations)
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
            onscreen["markdown_rich"] = await _markdown_rich_rate(app, pilot, chat, shown_at, finished_at, runs)
            await app.run_action("quit")
        return times, onscreen
    finally:
        TurnView.text_shown = original
        if old_config is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = old_config
        scratch.cleanup()


ONSCREEN_PROMPT = "The history of the city begins in the year"
ONSCREEN_TOKENS = 90


async def _show_reply(app, pilot, chat, prompt: str, markdown: bool, shown_at: list, finished_at: list) -> dict:
    """Send ``prompt`` in a new chat with replies shown as Markdown or raw: seconds from the
    first piece on screen to the whole reply on screen (``span``), from Enter to the first piece
    and to the whole reply on screen, the reply's text, the UI thread's CPU seconds."""
    from dataclasses import replace

    app.settings = replace(app.settings, markdown=markdown)  # (not saved: a throw-away config dir anyway)
    await pilot.press("ctrl+n")
    await pilot.pause()
    inp = chat.query_one("#chat-input")
    inp.load_text(prompt)
    inp.focus()
    await pilot.pause()
    shown_at.clear()
    finished_at.clear()
    ui_cpu0 = time.thread_time()
    t0 = time.perf_counter()
    await pilot.press("enter")
    deadline = time.monotonic() + 120
    while (chat.reply is not None or not finished_at) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the spy holds the times: polling often would itself take the GIL
    ui_cpu = time.thread_time() - ui_cpu0
    await pilot.pause()
    reply = chat.turns[-1] if chat.turns and chat.turns[-1].role == "assistant" else None
    views = [v for v in chat.view.query("TurnView") if v.role == "assistant"]
    if views and views[-1].markdown != markdown:
        raise RuntimeError("the reply was not shown the way the round asked")
    span = finished_at[-1] - shown_at[0] if shown_at and finished_at and finished_at[-1] > shown_at[0] else None
    return {
        "span": span,
        "first": shown_at[0] - t0 if shown_at else None,
        "whole": finished_at[-1] - t0 if finished_at else None,
        "text": reply.content if reply is not None else None,
        "cpu": ui_cpu,
    }


def _compare_views(rounds: list[dict], tokens: int) -> dict:
    """Plain (raw text) against Markdown over the rounds, each round a dict {markdown: shown}.
    The ratio counts from Enter (the same decode in both: what differs is the screen's work): a
    Markdown body starts showing a little later, which would flatter its rate from its first piece."""
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    both = [r for r in rounds if all(r[m]["span"] and r[m]["whole"] for m in (False, True))]
    rate = {m: [(tokens - 1) / r[m]["span"] for r in both] for m in (False, True)}
    from_enter = [r[False]["whole"] / r[True]["whole"] for r in both]
    from_first = [r[False]["span"] / r[True]["span"] for r in both]
    return {
        "plain_tokens_per_s": med(rate[False]),
        "markdown_tokens_per_s": med(rate[True]),
        "ratio": med(from_enter),
        "ratio_runs": [round(x, 3) for x in from_enter],
        "ratio_from_first_piece": med(from_first),
        "plain_enter_to_whole_ms": round(med([r[False]["whole"] for r in both]) * 1000, 1) if both else None,
        "markdown_enter_to_whole_ms": round(med([r[True]["whole"] for r in both]) * 1000, 1) if both else None,
        "plain_first_piece_ms": round(med([r[False]["first"] for r in both]) * 1000, 1) if both else None,
        "markdown_first_piece_ms": round(med([r[True]["first"] for r in both]) * 1000, 1) if both else None,
        "plain_ui_thread_cpu_ms": round(med([r[False]["cpu"] for r in both]) * 1000, 1) if both else None,
        "markdown_ui_thread_cpu_ms": round(med([r[True]["cpu"] for r in both]) * 1000, 1) if both else None,
    }


async def _onscreen_rate(app, pilot, chat, shown_at: list, finished_at: list, runs: int) -> dict:
    """Tokens/s of a reply as the screen shows it (first piece painted to the whole reply
    painted) against the same reply decoded headless (no UI), alternating, same weights, same
    prompt ids and seed (so the same tokens); each round shows it as raw text and as Markdown."""
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
    headless, onscreen, same, rounds = [], [], True, []
    for i in range(runs + 1):  # the first round warms up
        def decode():
            return [e for e in plain.stream(ids, app.settings.sampling) if isinstance(e, GenerationFinished)][-1]

        done = await asyncio.to_thread(decode)
        shown = {}
        for markdown in ((False, True) if i % 2 else (True, False)):  # alternating which goes first
            shown[markdown] = await _show_reply(app, pilot, chat, ONSCREEN_PROMPT, markdown, shown_at, finished_at)
            same = same and shown[markdown]["text"] == done.text
        if i and shown[True]["span"] and done.new_tokens > 1:
            onscreen.append((done.new_tokens - 1) / shown[True]["span"])
            headless.append(done.tokens_per_s)
            rounds.append(shown)
    on = statistics.median(onscreen) if onscreen else None
    head = statistics.median([h for h in headless if h]) if any(headless) else None
    # each on-screen reply against the headless one decoded just before it: the VM's speed
    # drifts between rounds, so the ratio is the median of the rounds' ratios
    paired = [o / h for o, h in zip(onscreen, headless) if h]
    views = _compare_views(rounds, done.new_tokens)
    return {
        "onscreen_tokens_per_s": on,
        "headless_tokens_per_s": head,
        "onscreen_ratio": statistics.median(paired) if paired else None,
        "onscreen_ratio_runs": [round(r, 3) for r in paired],
        "onscreen_plain_tokens_per_s": views["plain_tokens_per_s"],
        "onscreen_markdown_tokens_per_s": views["markdown_tokens_per_s"],
        "markdown_onscreen_ratio": views["ratio"],
        "markdown_views": views,
        "onscreen_decode_path": model.decode_path,
        "onscreen_decode_process": model.in_child_process,
        "onscreen_decode_process_note": model.process_note,
        "onscreen_same_text": same,
        "onscreen_new_tokens": done.new_tokens,
        "onscreen_ui_thread_cpu_ms": views["markdown_ui_thread_cpu_ms"],
    }


MARKDOWN_REPLY = """## Training a small model

Start with a **virtual environment**, then install the package:

```bash
python3 -m venv .venv
.venv/bin/pip install -e .
```

The presets differ in *width* and *depth*:

| preset | layers | width | parameters |
| --- | --- | --- | --- |
| tiny | 2 | 64 | 0.8 M |
| seed | 6 | 128 | 7 M |
| small | 6 | 384 | 30 M |

1. Pick a dataset (`builtin`, `chitchat` or WikiText-2).
2. Choose a time budget such as `3m`.
3. Watch the loss fall on the training screen:
   - the smoothed curve follows the trend,
   - the validation loss says whether it generalises.

> A model trained for three minutes answers in short sentences; give it an hour for more.

```python
from engine.generation.chat_model import ChatModel

chat = ChatModel.from_checkpoint("seed-chitchat")
for event in chat.stream(chat.encode_chat([{"role": "user", "content": "Hello!"}])):
    print(event)
```

That is all: **Esc** stops a reply, and `F9` shows this text raw.
"""
REPLAY_INTERVAL_S = 0.002  # a piece every 2 ms: ~500 pieces/s, about the seed preset's decode on 2 cores


class ReplayChat:
    """Streams ``MARKDOWN_REPLY`` in word-sized pieces at a fixed pace, sleeping between them
    (no decode takes the CPU or the GIL): the UI's cost alone.  ChatModel's streaming API."""

    in_child_process = False
    decode_path = "replay"

    def __init__(self, text: str, interval: float):
        import re

        self.pieces = re.findall(r"\s*\S+|\s+", text)
        self.text, self.interval = text, interval

    def fit_chat(self, messages, max_new_tokens):
        return [1, 2, 3], 0

    def encode_chat(self, messages):
        return [1, 2, 3]

    def close_process(self) -> None:
        pass

    def stream(self, prompt, sampling=None, stop=None, details=False):
        from engine.events import GenerationFinished, GenerationStarted, TokenGenerated

        yield GenerationStarted(prompt_tokens=3, truncated_tokens=0, max_new_tokens=len(self.pieces))
        t0 = time.perf_counter()
        for i, piece in enumerate(self.pieces):
            time.sleep(max(0.0, t0 + i * self.interval - time.perf_counter()))
            yield TokenGenerated(text=piece, index=i, elapsed_s=time.perf_counter() - t0)
        elapsed = time.perf_counter() - t0
        yield GenerationFinished(self.text, len(self.pieces), "eos", elapsed, len(self.pieces) / elapsed, 0.0)


async def _markdown_rich_rate(app, pilot, chat, shown_at: list, finished_at: list, runs: int) -> dict:
    """``MARKDOWN_REPLY`` replayed at a fixed pace, shown as raw text and as Markdown,
    alternating: pieces/s on screen (first piece shown to the whole reply shown)."""
    real = app.chat_model
    replay = ReplayChat(MARKDOWN_REPLY, REPLAY_INTERVAL_S)
    app.chat_model = replay
    rounds, same = [], True
    try:
        for i in range(runs + 1):  # the first round warms up (imports, the highlighter)
            shown = {}
            for markdown in ((False, True) if i % 2 else (True, False)):
                shown[markdown] = await _show_reply(app, pilot, chat, "How do I train a model?", markdown, shown_at, finished_at)
                same = same and shown[markdown]["text"] == MARKDOWN_REPLY
            if i:
                rounds.append(shown)
    finally:
        app.chat_model = real
    return {"pieces": len(replay.pieces), "paced_pieces_per_s": round(1 / REPLAY_INTERVAL_S), **_compare_views(rounds, len(replay.pieces)), "same_text": same}


ONSCREEN_METHOD = (
    f"on-screen tokens/s: Pilot, {ONSCREEN_TOKENS}-token reply (top-k 50, seed), first piece shown to the whole reply "
    "shown (TurnView.text_shown: for Markdown, once the body has caught up), vs the same reply decoded headless "
    "(ChatModel.stream on a thread, no UI), alternating; the ratio: median of each round's on-screen (Markdown, the "
    "default view) / headless; the same reply shown as raw text and as Markdown each round (alternating which first): "
    "markdown_onscreen_ratio, the median of the rounds' plain / Markdown time from Enter to the whole reply on screen "
    "(its tokens/s counted from Enter; markdown_views has the rest); markdown_rich: a Markdown-only reply "
    f"({len(MARKDOWN_REPLY)} characters) replayed through the app's streaming path at one word-sized piece every "
    f"{REPLAY_INTERVAL_S * 1000:.0f} ms, raw text vs Markdown, alternating"
)


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
        + ONSCREEN_METHOD,
    }


def measure_onscreen(checkpoint: str, runs: int = 3) -> dict:
    """The on-screen part alone (no launches, no first-token rounds): plain vs Markdown."""
    _, onscreen = asyncio.run(_first_tokens(checkpoint, runs, onscreen_only=True))
    return {**onscreen, "method": ONSCREEN_METHOD}


def main(argv: list[str] | None = None) -> dict:
    """``python -m bench.app_latency [CHECKPOINT] [--runs N] [--onscreen]``: the app section as
    JSON (``--onscreen``: only the on-screen rates, raw text vs Markdown, in a minute or two)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.app_latency")
    p.add_argument("checkpoint", nargs="?", default="quality")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--onscreen", action="store_true", help="only the on-screen tokens/s (plain vs Markdown)")
    a = p.parse_args(argv)
    report = measure_onscreen(a.checkpoint, a.runs) if a.onscreen else measure_app(a.checkpoint, a.runs)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
