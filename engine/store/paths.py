"""Where minigpt-tui keeps its files: platformdirs' user dirs (XDG variables relocate them)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "minigpt-tui"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def checkpoints_dir() -> Path:
    return data_dir() / "checkpoints"


def settings_file() -> Path:
    return config_dir() / "settings.json"


def keymap_file() -> Path:
    return config_dir() / "keymap.json"


def conversations_db() -> Path:
    return data_dir() / "conversations.sqlite3"
