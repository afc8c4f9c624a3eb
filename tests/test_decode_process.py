"""Replies decoded in a child process (engine/generation/decode_process.py): a real child Python process
that loads the session's tiny checkpoint, and the app using one."""

from __future__ import annotations

import os
import threading
import time

import pytest

from engine.events import GenerationFailed, GenerationFinished, TokenChoice, TokenGenerated
from engine.generation.chat_model import ChatModel
from engine.store.settings import Sampling
from test_tui_support import anyio_backend, ckpt_home, plain, wait_until  # noqa: F401  (fixtures)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture(scope="module")
def chat_in_process(tiny_checkpoint):
    chat = ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")
    chat.warm_up()
    assert chat.start_process(("checkpoint", tiny_checkpoint)), chat.process_note
    yield chat
    chat.close_process()


def _plain(chat):
    """The same weights decoding on a thread here."""
    c = ChatModel(model=chat.model, tokenizer=chat.tokenizer, name=chat.name, device="cpu")
    c.warm_up()
    return c


def test_the_child_gives_the_same_replies(chat_in_process):
    chat = chat_in_process
    assert chat.in_child_process and chat.decode_path == "fast" and chat.decode_note == "fast"
    here = _plain(chat)
    for s in (
        Sampling(temperature=0, max_new_tokens=30),
        Sampling(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2, max_new_tokens=40, seed=5),
        Sampling(max_new_tokens=3 * chat.n_positions, seed=2),  # slides the window
    ):
        got, want = list(chat.stream("And God said", s)), list(here.stream("And God said", s))
        assert [type(e) for e in got] == [type(e) for e in want]
        assert [e.text for e in got if isinstance(e, TokenGenerated)] == [e.text for e in want if isinstance(e, TokenGenerated)]
        assert got[-1].text == want[-1].text and got[-1].new_tokens == want[-1].new_tokens


def test_the_child_sends_token_details(chat_in_process):
    s = Sampling(max_new_tokens=6, seed=3)
    got = [c for e in chat_in_process.stream("The LORD", s, details=True) if isinstance(e, TokenGenerated) for c in e.choices]
    want = [c for e in _plain(chat_in_process).stream("The LORD", s, details=True) if isinstance(e, TokenGenerated) for c in e.choices]
    assert got and all(isinstance(c, TokenChoice) for c in got)
    assert [c.token_id for c in got] == [c.token_id for c in want]
    assert [c.prob for c in got] == pytest.approx([c.prob for c in want])


def test_cancel_yields_nothing_after_the_stop(chat_in_process):
    stop = threading.Event()
    s = Sampling(max_new_tokens=2_000, seed=1, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    tokens = []
    for event in chat_in_process.stream("And", s, stop):
        if isinstance(event, TokenGenerated):
            tokens.append(event)
            if len(tokens) == 3:
                stop.set()
    assert len(tokens) == 3
    assert isinstance(event, GenerationFinished) and event.stop_reason == "cancelled"
    assert event.new_tokens == tokens[-1].index + 1 and event.text == "".join(t.text for t in tokens)
    # the child is free for the next reply at once
    assert isinstance(list(chat_in_process.stream("And", Sampling(max_new_tokens=4, seed=0)))[-1], GenerationFinished)


def test_a_reply_the_caller_stops_reading_is_cancelled_in_the_child(chat_in_process):
    """A reply abandoned mid-way (its generator closed) is cancelled in the child, which is then
    free for the next reply."""
    proc = chat_in_process._process
    sent = []
    send = proc._send
    proc._send = lambda msg: (sent.append(msg), send(msg))[1]
    try:
        s = Sampling(max_new_tokens=100_000, seed=1, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
        long = chat_in_process.stream("And", s)
        for _, event in zip(range(4), long):
            pass
        assert isinstance(event, TokenGenerated)
        long.close()
        assert not proc.busy
        rid = next(msg[1] for msg in sent if msg[0] == "reply")
        assert ("cancel", rid) in sent
        done = list(chat_in_process.stream("And", Sampling(max_new_tokens=4, seed=0)))[-1]
        assert isinstance(done, GenerationFinished) and done.stop_reason in ("length", "eos")
    finally:
        del proc._send


def test_a_second_reply_at_the_same_time_decodes_here(chat_in_process):
    s = Sampling(max_new_tokens=40, seed=3)
    want = _plain(chat_in_process).generate_text("And", s)
    first = chat_in_process.stream("And", s)
    next(first), next(first)  # under way in the child
    assert chat_in_process._process.busy
    second = list(chat_in_process.stream("And", s))
    rest = list(first)
    assert second[-1].text == rest[-1].text == want
    assert not chat_in_process._process.busy


def test_a_child_that_dies_fails_one_reply_then_replies_decode_here(tiny_checkpoint):
    chat = ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")
    assert chat.start_process(("checkpoint", tiny_checkpoint)), chat.process_note
    pid = chat._process.pid
    events = []
    for event in chat.stream("And", Sampling(max_new_tokens=2_000, seed=1, temperature=1.0, top_k=0, top_p=1.0)):
        events.append(event)
        if len(events) == 3:
            os.kill(pid, 9)
    assert isinstance(events[-1], GenerationFailed) and "decode process" in events[-1].error
    assert _wait_gone(pid)
    assert not chat.in_child_process
    done = list(chat.stream("And", Sampling(max_new_tokens=5, seed=0)))[-1]
    assert isinstance(done, GenerationFinished) and done.new_tokens > 0
    chat.close_process()


def test_a_stopped_reply_ends_as_stopped_when_the_child_is_closed_meanwhile(tiny_checkpoint):
    """The app stops a streaming reply and ends the child when the user opens another model."""
    chat = ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")
    assert chat.start_process(("checkpoint", tiny_checkpoint)), chat.process_note
    stop = threading.Event()
    events = []
    for event in chat.stream("And", Sampling(max_new_tokens=2_000, seed=1, temperature=1.0, top_k=0, top_p=1.0), stop):
        events.append(event)
        if len(events) == 3:
            stop.set()
            chat.close_process()
    done = events[-1]
    assert isinstance(done, GenerationFinished) and done.stop_reason == "cancelled"
    assert done.new_tokens == 2 and not chat.in_child_process  # the two tokens shown before the stop


def test_close_ends_the_child_and_a_folder_loads_too(tiny_checkpoint, tiny_checkpoint_dir):
    chat = ChatModel.from_folder(tiny_checkpoint_dir, device="cpu")
    assert chat.start_process(("folder", str(tiny_checkpoint_dir))), chat.process_note
    pid = chat._process.pid
    assert _alive(pid)
    assert isinstance(list(chat.stream("And", Sampling(max_new_tokens=4, seed=0)))[-1], GenerationFinished)
    chat.close_process()
    assert _wait_gone(pid) and not chat.in_child_process


def test_a_child_that_cannot_load_says_why(tiny_checkpoint):
    chat = ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")
    assert not chat.start_process(("checkpoint", "no-such-checkpoint"))
    assert "no-such-checkpoint" in chat.process_note
    assert not chat.in_child_process
    assert isinstance(list(chat.stream("And", Sampling(max_new_tokens=4, seed=0)))[-1], GenerationFinished)


@pytest.mark.anyio
async def test_the_app_decodes_in_a_child_and_ends_it_on_exit(ckpt_home, tiny_checkpoint, monkeypatch):
    from tui.app import MiniGPTApp
    from tui.widgets.turns import ChatInput, TurnView

    monkeypatch.setenv("MINIGPT_DECODE_PROCESS", "1")
    app = MiniGPTApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the model to load")
        status = lambda: plain(app.screen.query_one("#chat-status"))  # noqa: E731
        await wait_until(pilot, lambda: "fast decode (process)" in status(), 120, "the decode process")
        pid = app.chat_model._process.pid
        assert _alive(pid)
        app.settings = app.settings.__class__(sampling=app.settings.sampling.__class__(max_new_tokens=24, seed=1))
        inp = app.screen.query_one(ChatInput)
        inp.focus()
        inp.load_text("In the beginning")
        await pilot.press("enter")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None and len(chat.turns) == 2, 60, "the reply")
        reply = list(app.screen.query(TurnView))[-1]
        want = _plain(app.chat_model).generate_text(app.chat_model.encode_chat([{"role": "user", "content": "In the beginning"}]), app.settings.sampling)
        assert reply.text == chat.turns[-1].content == want
    assert _wait_gone(pid)
