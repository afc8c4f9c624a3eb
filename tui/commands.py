"""Command palette entries (Ctrl+P): the screens and the main actions.  A help text names keys
by binding id (``<chat.new>``): the palette shows the key the binding has now (``tui.keymap``)."""

from __future__ import annotations

import asyncio
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.keymap import with_keys

COMMANDS = [
    ("Chat", "Open the chat screen (<app.chat>)", "switch_mode('chat')"),
    ("Training", "Open the training screen (<app.training>)", "switch_mode('training')"),
    ("Checkpoints", "Open the checkpoint picker (<app.checkpoints>)", "switch_mode('checkpoints')"),
    ("Sampling settings", "The open chat's temperature, top-k, top-p, max new tokens, repetition penalty, seed; or make them the default (<app.sampling>)", "sampling"),
    ("Conversations", "Saved conversations: open, search, rename, delete, export (Markdown, JSONL), import JSONL (<app.conversations>)", "conversations"),
    ("New chat", "Start a new conversation (<chat.new>)", "new_chat"),
    ("Copy the last reply", "To the clipboard (<chat.copy>)", "chat_action('copy_reply')"),
    ("Copy the last code block", "The last code block of the last reply, to the clipboard (<chat.copy_code> in the chat)", "chat_action('copy_code')"),
    ("Toggle raw text / Markdown replies", "Show replies as their raw text or as Markdown; remembered (<chat.raw> in the chat)", "chat_action('toggle_raw')"),
    ("Regenerate the last reply", "Ask the model again: a new version, the earlier one is kept (<chat.regenerate> in the chat)", "chat_action('regenerate')"),
    ("Edit the last message", "Take it back into the input: sent, it is a new version with its own reply (<chat.edit>)", "chat_action('edit_last')"),
    ("Correct the last reply", "Your text becomes its new version, marked as written by you: train on it (<chat.correct>)", "chat_action('correct_reply')"),
    ("Previous version", "Of the marked turn (\u25c2 2/3 \u25b8) in the chat (<chat.prev_version>)", "chat_action('version(-1)')"),
    ("Next version", "Of the marked turn in the chat (<chat.next_version>)", "chat_action('version(1)')"),
    ("Set system prompt", "The open chat's system prompt, sent before its turns; empty for none (<chat.system> in the chat)", "chat_action('system_prompt')"),
    ("Inspect the last reply's tokens", "Each token's probability and the model's top 10 alternatives (<chat.inspect>)", "chat_action('inspect')"),
    ("Train the default model", "Start the first-run training (<chat.train_default>)", "train_default"),
    ("Toggle light/dark theme", "Switch between the light and dark theme (<app.theme>)", "toggle_theme"),
    ("Help", "Keys and file locations (<app.help>)", "help"),
]


class ScreensProvider(Provider):
    """Screens and actions of minigpt-tui."""

    async def _run(self, action: str) -> None:
        await self.app.run_action(action)

    async def discover(self) -> Hits:
        for name, help_text, action in COMMANDS:
            yield DiscoveryHit(name, partial(self._run, action), help=with_keys(self.app, help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in COMMANDS:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, action), help=with_keys(self.app, help_text))


class _ListProvider(Provider):
    """Entries read from disk when the palette opens (on a thread: never on the UI's time)."""

    verb = ""

    async def startup(self) -> None:
        # Started here, awaited (shielded) by each search.  Not awaited here: Textual's searches
        # await the startup, and each keystroke cancels the search before it, which cancelled a
        # read still on its way, and the palette then found none of these entries until reopened.
        self._loading = asyncio.ensure_future(self._read())

    async def _read(self) -> list[tuple[str, str, object]]:
        try:
            return await asyncio.to_thread(self.load)
        except Exception:  # a damaged store must not break the palette
            return []

    async def entries(self) -> list[tuple[str, str, object]]:
        return await asyncio.shield(self._loading)  # a cancelled search leaves the read running

    def load(self) -> list[tuple[str, str, object]]:  # (label, help, callback)
        raise NotImplementedError

    async def discover(self) -> Hits:
        for label, help_text, callback in await self.entries():
            yield DiscoveryHit(label, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, help_text, callback in await self.entries():
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), callback, help=help_text)


class CheckpointsProvider(_ListProvider):
    """"Use NAME": make a saved checkpoint the chat's model."""

    def load(self):
        from engine.store.checkpoints import CheckpointStore

        entries = []
        for info in CheckpointStore().list():
            if info.ok:
                record = info.record
                what = ", ".join(x for x in (record.preset, record.dataset, "chat model" if record.chat else None) if x)
                entries.append((f"Use {info.name}", f"Chat with checkpoint {info.name}" + (f" ({what})" if what else ""), partial(self.app.use_checkpoint, info.name)))
        return entries


class ChatsProvider(_ListProvider):
    """"Open TITLE": a saved conversation."""

    def load(self):
        return [
            (f"Open {conv.title}", f"Saved chat, {conv.messages} messages, {conv.updated[:16].replace('T', ' ')}", partial(self.app.open_conversation, conv.id))
            for conv in self.app.conversations.list()[:200]
        ]
