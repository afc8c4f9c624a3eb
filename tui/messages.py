"""Textual messages that carry engine events from worker threads to the UI.

Workers only post messages (``post_message`` is thread safe).  Progress messages coalesce:
``can_replace`` lets a newer one supersede a queued older one, so a fast training run or a
fast model never floods the message queue (as in the app *toolong*).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message


@dataclass
class TrainEventMessage(Message):
    """Any training event except steps (started, eval, sample, saved, finished, failed...)."""

    event: object


@dataclass
class TrainProgress(Message):
    """The latest TrainStep; the loss history lives in the run state, so replacing is lossless."""

    event: object

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TrainProgress)


@dataclass
class ReplyProgress(Message):
    """The whole reply so far (so a newer one can replace a queued older one)."""

    reply_id: int
    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ReplyProgress) and message.reply_id == self.reply_id


@dataclass
class ReplyStarted(Message):
    """GenerationStarted; its ``dropped_turns`` filled in by the chat's worker (ChatModel.fit_chat)."""

    reply_id: int
    event: object


@dataclass
class ReplyDone(Message):
    """GenerationFinished or GenerationFailed."""

    reply_id: int
    event: object
    choices: list = field(default_factory=list)  # TokenChoice per token (the inspector)


@dataclass
class ModelReady(Message):
    worker: object  # the load's Worker: cancelled when another model was chosen since
    model: object


@dataclass
class DecodePathChanged(Message):
    """The loaded model's decode path is settled (its fast path warmed up, or not available)."""

    worker: object


@dataclass
class ModelFailed(Message):
    worker: object
    name: str
    error: str


@dataclass
class CheckpointsChanged(Message):
    """The checkpoint store changed (a save, rename, delete)."""


@dataclass
class ConversationDeleted(Message):
    conversation_id: int


@dataclass
class ChatCommand:
    """What the app asks of the chat screen, published on ``app.chat_commands`` (a Textual
    ``Signal`` the chat subscribes to): the palette, the saved-chats screen and Ctrl+Q speak to
    the chat this way instead of calling into it."""

    action: str  # new_chat | open | conversation_deleted | stop | a chat action (copy_reply, regenerate, edit_last, inspect, system_prompt, ...)
    conversation_id: int | None = None
    message_id: int | None = None  # open: the message whose branch to show (a search hit)
