"""The user's keymap: ``keymap.json`` in the config dir maps binding ids to keys, e.g.
``{"chat.copy": "ctrl+k", "app.quit": "ctrl+q,ctrl+c"}``; applied with Textual's ``set_keymap``."""

from __future__ import annotations

import json
from pathlib import Path


def load_keymap(path: Path, known_ids: set[str]) -> tuple[dict[str, str], list[str]]:
    """(keymap, problems): the valid entries, and one line per thing that was ignored."""
    if not path.exists():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [f"keymap {path} ignored: {exc}"]
    if not isinstance(data, dict):
        return {}, [f"keymap {path} ignored: expected an object of binding id -> keys"]
    keymap, problems = {}, []
    for binding_id, keys in data.items():
        if binding_id not in known_ids:
            problems.append(f"keymap: unknown binding id {binding_id!r}")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f"keymap: keys for {binding_id!r} must be a string such as \"ctrl+k\"")
        else:
            keymap[binding_id] = keys.replace(" ", "")
    return keymap, problems


def binding_ids(*classes) -> set[str]:
    """Every binding id declared by these App/Screen/Widget classes."""
    ids = set()
    for cls in classes:
        for binding in getattr(cls, "BINDINGS", []):
            if getattr(binding, "id", None):
                ids.add(binding.id)
    return ids
