"""Chat state: nothing typed is lost, focus lands where the user types, a late reply stays in
its own conversation, and nothing (a reply, a training run) outlives the app."""

from __future__ import annotations

import asyncio

import pytest

from engine.events import GenerationFailed, GenerationStarted, TokenGenerated
from test_tui_support import FakeChat, anyio_backend, chat_turns, fake_ready, ckpt_home, wait_until  # noqa: F401  (fixtures)
from tui.app import MiniGPTApp
from tui.widgets.turns import ChatInput, TurnView
from tui.messages import ConversationDeleted

pytestmark = pytest.mark.anyio


async def _type_and_send(pilot, text: str) -> None:
    """Type as a person does: into whatever has focus (the test never moves focus itself)."""
    await pilot.press(*text)
    await pilot.press("enter")


class FailingChat(FakeChat):
    """A model whose reply fails after one piece (as a model that raises mid-reply reports it)."""

    def stream(self, prompt, sampling=None, stop=None, details=False):
        yield GenerationStarted(prompt_tokens=3, truncated_tokens=0, max_new_tokens=5)
        yield TokenGenerated(text="half", index=0, elapsed_s=0.001)
        yield GenerationFailed(error="RuntimeError: the model broke")


async def test_new_user_path_train_stop_then_chat(fresh_dirs):
    """Enter on the first-run screen trains; F2; Stop saves; F1: the chat input has focus, and
    what the user types next gets a reply from the model that was just saved."""
    app = MiniGPTApp()
    app.DEFAULT_PRESET = "tiny"  # the real default path (time budget, default tokenizer), a tiny shape
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.model_status == "none", 30, "start-up")
        await wait_until(pilot, lambda: isinstance(app.focused, ChatInput), 5, "focus on the chat input")
        await pilot.press("enter")  # empty input + no model: the first-run offer
        await wait_until(pilot, lambda: app.screen is app.views.get("training"), 10, "the training screen")
        await wait_until(pilot, lambda: app.run_state.step is not None or app.run_state.status == "failed", 240, "a step")
        assert app.run_state.status != "failed", app.run_state.error
        await pilot.press("f2")  # (already there: F2 keeps it)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.run_state.status == "stopped", 120, "the stop to save")
        await pilot.press("f1")
        await wait_until(pilot, lambda: app.screen is app.views["chat"], 10, "the chat")
        await wait_until(pilot, lambda: app.model_status == "ready", 120, "the saved model to load")
        assert isinstance(app.focused, ChatInput), app.focused
        await _type_and_send(pilot, "hello")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: len(chat_turns(app)) == 2 and chat.reply is None, 60, "the reply")
        user, reply = chat_turns(app)
        assert user.text == "hello" and reply.role == "assistant" and not reply.error
        assert not app.run_state.running


async def test_model_status_none_keeps_focus_in_the_input(fresh_dirs):
    """A model that goes away (status 'none') must not move focus to the first-run button:
    the next Enter would start a training run nobody asked for."""
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["fine."]))
        await _type_and_send(pilot, "hi")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None and len(chat_turns(app)) == 2, 10, "the reply")
        app.chat_model, app.active_name, app.model_status = None, None, "none"  # as deleting the active checkpoint does
        await pilot.pause()
        await pilot.press("ctrl+n")  # a new chat: the first-run offer shows again
        await pilot.pause()
        assert chat.query_one("#welcome").display
        assert isinstance(app.focused, ChatInput), app.focused
        await _type_and_send(pilot, "anyone there?")  # text with no model: kept, no run started
        await pilot.pause()
        assert not app.run_state.running and app.run_state.status == "idle"
        assert chat.query_one(ChatInput).text == "anyone there?"


@pytest.mark.parametrize("how", ["new chat", "open another", "delete"])
async def test_late_reply_stays_in_its_own_conversation(fresh_dirs, how):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["old "], delay=0.0))
        store = app.conversations
        await _type_and_send(pilot, "first chat")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None, 10, "the first reply")
        other = chat.conversation_id
        await pilot.press("ctrl+n")
        app.chat_model = FakeChat([f"w{i} " for i in range(500)], delay=0.01)
        await _type_and_send(pilot, "second chat")
        await wait_until(pilot, lambda: chat.reply is not None and chat.reply.text, 10, "streaming")
        streaming_in = chat.conversation_id
        if how == "new chat":
            await pilot.press("ctrl+n")
        elif how == "open another":
            chat.load_conversation(other)
        else:
            store.delete(streaming_in)
            app.post_message(ConversationDeleted(streaming_in))
        await wait_until(pilot, lambda: not chat.detached, 10, "the late reply to end")
        await pilot.pause()
        # the view shows only what belongs to the conversation now shown
        shown = [(t.role, t.text) for t in chat_turns(app)]
        if how == "open another":
            assert chat.conversation_id == other and shown == [("user", "first chat"), ("assistant", "old ")]
        else:
            assert chat.conversation_id is None and shown == [] and chat.turns == []
        assert [(t.role, t.content) for t in store.turns(other)] == [("user", "first chat"), ("assistant", "old ")]
        if how == "delete":
            assert store.get(streaming_in) is None
        else:
            late = store.turns(streaming_in)
            assert [t.role for t in late] == ["user", "assistant"] and late[1].stopped and late[1].content.startswith("w0 ")
        # the next message starts clean: no late turn is sent with it
        app.chat_model = FakeChat(["new."])
        await _type_and_send(pilot, "third")
        await wait_until(pilot, lambda: chat.reply is None and chat_turns(app) and chat_turns(app)[-1].text == "new.", 10, "a reply")
        roles = [t.role for t in store.turns(chat.conversation_id)]
        assert roles[-2:] == ["user", "assistant"] and "assistant" not in roles[:1]


async def test_failed_reply_gives_the_message_back(fresh_dirs):
    """A failed reply leaves no lone user turn in the stored chat (so never two in a row), and
    the message is back in the input to send again."""
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await fake_ready(pilot, app, FakeChat(["ok."]))
        store = app.conversations
        await _type_and_send(pilot, "one")
        chat = app.views["chat"]
        await wait_until(pilot, lambda: chat.reply is None and len(chat_turns(app)) == 2, 10, "a reply")
        app.chat_model = FailingChat([])
        await _type_and_send(pilot, "two")
        await wait_until(pilot, lambda: chat.reply is None and chat_turns(app)[-1].error, 10, "the failure")
        assert chat.query_one(ChatInput).text == "two"
        assert [(t.role, t.content) for t in store.turns(chat.conversation_id)] == [("user", "one"), ("assistant", "ok.")]
        app.chat_model = FakeChat(["again."])
        await pilot.press("enter")  # send it again as it is
        await wait_until(pilot, lambda: chat.reply is None and chat_turns(app)[-1].text == "again.", 10, "the retry")
        assert [t.role for t in store.turns(chat.conversation_id)] == ["user", "assistant", "user", "assistant"]

        # a first message that fails leaves no empty conversation behind
        await pilot.press("ctrl+n")
        app.chat_model = FailingChat([])
        await _type_and_send(pilot, "lonely")
        await wait_until(pilot, lambda: chat.reply is None and chat_turns(app) and chat_turns(app)[-1].error, 10, "the failure")
        assert chat.conversation_id is None and len(store.list()) == 1


async def _start_long_run(pilot, app) -> None:
    from engine.training.config import TrainConfig

    assert app.start_training(TrainConfig(dataset="builtin", preset="tiny", max_steps=100_000, eval_every=100_000, name="long"))
    await wait_until(pilot, lambda: app.run_state.step is not None or app.run_state.status == "failed", 240, "a step")
    assert app.run_state.status != "failed", app.run_state.error


async def test_app_exit_stops_and_saves_the_run(fresh_dirs):
    """However the app ends, a run it started does not outlive it: it is stopped and saved."""
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await _start_long_run(pilot, app)
        app.exit(0)  # not the quit action: the unmount must do it
    state = app.run_state
    assert state.done.is_set()
    from engine.store.checkpoints import CheckpointStore

    info = CheckpointStore().get("long")
    assert info.ok and info.meta["steps"] >= 1


async def test_second_ctrl_q_quits_without_waiting_and_says_what_is_lost(fresh_dirs):
    app = MiniGPTApp(autoload=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await _start_long_run(pilot, app)
        first = asyncio.create_task(app.run_action("quit"))
        await wait_until(pilot, lambda: app.quitting, 10, "the first Ctrl+Q")
        assert "saving" in app.sub_title
        assert any("Ctrl+Q again" in str(n.message) for n in app._notifications)
        await app.run_action("quit")
        await wait_until(pilot, lambda: not app.is_running, 10, "the second Ctrl+Q")
        first.cancel()
    assert app.force_quit and app.return_code == 0
    assert "long" in app.exit_note and "lost" in app.exit_note
    app.run_state.done.wait(120)  # the abandoned run ends by itself (not saved)
