"""User settings (active checkpoint, sampling defaults, theme, Markdown or raw replies) in ``user_config_dir/settings.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from engine.store import atomic

from engine.store import paths
from engine.errors import UsageError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 50  # 0 = off
    top_p: float = 0.95  # 1 = off
    repetition_penalty: float = 1.1  # 1 = off
    max_new_tokens: int = 128
    seed: int | None = None  # None = a fresh seed each reply

    def validated(self) -> "Sampling":
        """Return self, or raise UsageError naming the first value out of range."""
        checks = [
            ("temperature", isinstance(self.temperature, (int, float)) and 0 <= self.temperature <= 10, "temperature must be between 0 and 10"),
            ("top_k", isinstance(self.top_k, int) and 0 <= self.top_k <= 1_000_000, "top-k must be a whole number >= 0"),
            ("top_p", isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (
                "repetition_penalty",
                isinstance(self.repetition_penalty, (int, float)) and 0 < self.repetition_penalty <= 10,
                "repetition penalty must be in (0, 10]",
            ),
            ("max_new_tokens", isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= 100_000, "max new tokens must be >= 1"),
            ("seed", self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**63), "seed must be a whole number >= 0"),
        ]
        for field_name, ok, message in checks:
            if not ok:
                raise UsageError(message, field=field_name)
        return self

    @classmethod
    def from_dict(cls, data: dict) -> "Sampling":
        if not isinstance(data, dict):
            raise ValueError("sampling must be a JSON object")
        known = {f.name for f in fields(cls)}
        return replace(cls(), **{k: v for k, v in data.items() if k in known}).validated()


@dataclass(frozen=True)
class Settings:
    active_checkpoint: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    theme: str = "textual-dark"
    markdown: bool = True  # replies shown as Markdown (False: their raw text); the chat's F9

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        if not isinstance(data, dict):
            raise ValueError("settings must be a JSON object")
        active = data.get("active_checkpoint")
        theme = data.get("theme", cls.theme)
        if active is not None and not isinstance(active, str):
            raise ValueError("active_checkpoint must be a string")
        if not isinstance(theme, str):
            raise ValueError("theme must be a string")
        markdown = data.get("markdown", cls.markdown)  # absent in files from before it: on
        if not isinstance(markdown, bool):
            raise ValueError("markdown must be true or false")
        sampling = data.get("sampling")
        return cls(
            active_checkpoint=active, sampling=Sampling.from_dict({} if sampling is None else sampling), theme=theme, markdown=markdown
        )


def load_settings(path: Path | None = None, notify: Callable[[str], None] | None = None) -> Settings:
    """Settings from disk; a damaged file is set aside (kept) and defaults are used."""
    path = Path(path) if path else paths.settings_file()
    if not path.exists():
        return Settings()
    try:
        return Settings.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, UsageError) as exc:
        kept = atomic.set_aside(path)
        if notify:
            notify(f"settings file was damaged ({exc}); using defaults, the bad file is kept as {kept}")
        return Settings()


def save_settings(settings: Settings, path: Path | None = None) -> None:
    atomic.write_json(Path(path) if path else paths.settings_file(), settings.to_dict())
