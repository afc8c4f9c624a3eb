"""Helpers shared by the TUI tests (imported by tests/test_tui_*.py; holds no tests itself)."""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest

from engine.events import GenerationFinished, GenerationStarted, TokenGenerated


def plain(widget) -> str:
    """The text a Static shows (content may be a str, rich Text or Content), or a chat turn
    (TurnView.shown_text: its header, text as shown, marks)."""
    if hasattr(widget, "shown_text"):
        return widget.shown_text()
    content = widget.content
    return content.plain if hasattr(content, "plain") else str(content)


async def wait_until(pilot, condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


async def open_palette(pilot) -> None:
    """Ctrl+P, and wait until the command palette takes the keys."""
    from textual.command import CommandInput, CommandPalette

    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette) and isinstance(app.focused, CommandInput), 10, "the command palette")


async def run_from_palette(pilot, query: str, command: str, typed: bool = False) -> None:
    """Ctrl+P, type ``query`` (``typed``: the palette is open with it typed already), wait until
    the palette has gathered its results for it and ``command`` is the highlighted one (what
    Enter runs), then Enter."""
    from textual.command import CommandInput, CommandList, CommandPalette

    app = pilot.app
    if not typed:
        await open_palette(pilot)
        await pilot.press(*query)
    palette = app.screen

    results = palette.query_one(CommandList)

    def highlighted() -> str | None:
        if results.highlighted is None:
            return None
        return str(results.get_option_at_index(results.highlighted).hit.text)

    def gathered() -> bool:
        busy = [w for w in app.workers if w.group == CommandPalette._GATHER_COMMANDS_GROUP and not w.is_finished]
        return palette.query_one(CommandInput).value == query and not busy

    try:
        await wait_until(pilot, lambda: gathered() and highlighted() == command, 10, f"{command!r} highlighted in the palette for {query!r}")
    except AssertionError as exc:
        found = [str(o.hit.text) for o in results.options if hasattr(o, "hit")]
        raise AssertionError(f"{exc}; the palette holds {found}, highlighted {highlighted()!r}") from None
    await pilot.press("enter")


async def fake_ready(pilot, app, chat) -> None:
    """The app with no checkpoint, then ``chat`` (a FakeChat) as its ready model."""
    await wait_until(pilot, lambda: app.model_status == "none", 10, "start-up")
    app.chat_model, app.active_name, app.model_status = chat, "fake", "ready"
    await pilot.pause()


def chat_turns(app) -> list:
    """The turns shown in the chat screen (whichever screen is on top)."""
    from tui.widgets.turns import TurnView

    return list(app.views["chat"].query(TurnView))


def session_checkpoints(isolated_dirs) -> Path:
    return Path(isolated_dirs) / "data" / "minigpt-tui" / "checkpoints"


def home_with(name: str, isolated_dirs):
    """The store of the fresh data dirs (``fresh_dirs``), holding a copy of the session's checkpoint ``name``."""
    from engine.store.checkpoints import CheckpointStore

    store = CheckpointStore()
    store.root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(session_checkpoints(isolated_dirs) / name, store.root / name)
    return store


@pytest.fixture
def ckpt_home(tiny_checkpoint, isolated_dirs, fresh_dirs):
    """Fresh data/config dirs holding a copy of the session's tiny checkpoint (and its name)."""
    return home_with(tiny_checkpoint, isolated_dirs)


def copy_checkpoint(store, src: str, dst: str) -> None:
    shutil.copytree(store.root / src, store.root / dst)
    meta_file = store.root / dst / "minigpt.json"
    meta = json.loads(meta_file.read_text())
    meta["name"] = dst
    meta_file.write_text(json.dumps(meta))


def make_broken(store, name: str = "broken-one") -> Path:
    """A checkpoint folder with a garbage config.json."""
    path = store.root / name
    path.mkdir(parents=True)
    (path / "minigpt.json").write_text(json.dumps({"name": name, "preset": "tiny"}))
    (path / "config.json").write_text("{ this is not json")
    return path


def make_fake(store, name: str, **meta) -> Path:
    """A checkpoint that lists as good (valid safetensors header, tokenizer file) with fixed
    metadata and size, for deterministic snapshots.  It is never loaded."""
    path = store.root / name
    path.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    (path / "config.json").write_text("{}")
    (path / "tokenizer.json").write_text("{}")
    full = {
        "name": name,
        "preset": "tiny",
        "params": 3_320_000,
        "dataset": "builtin (King James Bible)",
        "steps": 100,
        "val_loss": 5.4321,
        "perplexity": 228.7,
        "bits_per_byte": 2.345,
        "created": "2026-01-02T03:04:05+00:00",
    }
    full.update(meta)
    (path / "minigpt.json").write_text(json.dumps(full))
    return path


class FakeChat:
    """Stands in for engine.generation.chat_model.ChatModel where a test needs exact model text."""

    def __init__(self, pieces: list[str], name: str = "fake", delay: float = 0.0, ends: str = "eos"):
        self.pieces, self.name, self.delay = pieces, name, delay
        self.ends = ends  # the stop reason of a reply that runs out: "eos" (it ends its turn) or "length"

    in_child_process = False  # decodes "here" (ChatModel's decode-process API)

    def encode_chat(self, messages):
        return [1, 2, 3]

    def fit_chat(self, messages, max_new_tokens):
        self.messages = messages  # what the chat sent (a test reads it)
        return [1, 2, 3], 0

    def close_process(self) -> None:
        pass

    def stream(self, prompt, sampling=None, stop=None, details=False):
        yield GenerationStarted(prompt_tokens=3, truncated_tokens=0, max_new_tokens=len(self.pieces))
        text = ""
        for i, piece in enumerate(self.pieces):
            if stop is not None and stop.is_set():
                yield GenerationFinished(text, i, "cancelled", 0.001, 100.0, 0.01)
                return
            time.sleep(self.delay)
            text += piece
            yield TokenGenerated(text=piece, index=i, elapsed_s=0.001 * (i + 1))
        yield GenerationFinished(text, len(self.pieces), self.ends, 0.001, 100.0, 0.01)


@pytest.fixture
def anyio_backend():
    """Async tests run on asyncio (the anyio pytest plugin; Textual needs asyncio)."""
    return "asyncio"


@pytest.fixture
def shown_texts(monkeypatch) -> list[str]:
    """Every text a chat turn is given to show (``TurnView.set_text``), in order."""
    from tui.widgets.turns import TurnView

    shown: list[str] = []
    original = TurnView.set_text

    def spy(self, text):
        shown.append(text)
        original(self, text)

    monkeypatch.setattr(TurnView, "set_text", spy)
    return shown
