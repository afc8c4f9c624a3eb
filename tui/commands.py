"""Command palette entries (Ctrl+P): the screens and the main actions."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

COMMANDS = [
    ("Chat", "Open the chat screen (F1)", "switch_mode('chat')"),
    ("Training", "Open the training screen (F2)", "switch_mode('training')"),
    ("Checkpoints", "Open the checkpoint picker (F3)", "switch_mode('checkpoints')"),
    ("Sampling settings", "Temperature, top-k, top-p, max new tokens, repetition penalty, seed (F4)", "sampling"),
    ("Conversations", "Saved conversations: open, rename, delete, export (F5)", "conversations"),
    ("New chat", "Start a new conversation (Ctrl+N)", "new_chat"),
    ("Train the default model", "Start the first-run training (Ctrl+T)", "train_default"),
    ("Toggle light/dark theme", "Switch between the light and dark theme (F7)", "toggle_theme"),
    ("Help", "Keys and file locations (F6)", "help"),
]


class ScreensProvider(Provider):
    """Screens and actions of minigpt-tui."""

    async def _run(self, action: str) -> None:
        await self.app.run_action(action)

    async def discover(self) -> Hits:
        for name, help_text, action in COMMANDS:
            yield DiscoveryHit(name, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in COMMANDS:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, action), help=help_text)
