"""Keys: the user's keymap, and the keys bindings have now, named in prose.

``keymap.json`` in the config dir maps binding ids to keys, e.g.
``{"chat.copy": "ctrl+k", "app.quit": "ctrl+q,ctrl+c"}``; applied with Textual's ``set_keymap``.

Every text that names a key takes it from here, so a keymap moves it everywhere: the help, the
palette, titles, hints and notifications.  A text names a key by its binding id in angle
brackets, ``with_keys(app, "press <chat.stop> to stop it")`` -> ``"press Esc to stop it"`` (or
whatever key the keymap gave ``chat.stop``).  The footer and the streaming reply's hint use
Textual's own display (``esc``, ``^x``); prose uses :func:`key_label` (``Esc``, ``Ctrl+X``).

The bindings are the ``BINDINGS`` (with an ``id``) of the app and of the classes in
``tui.screens`` and ``tui.widgets``; a class added there is found without being listed.  Those
already imported are searched first; the others are imported only for an id not found there
(the help lists them all).
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import sys
from pathlib import Path

from textual.binding import Binding
from textual.keys import format_key

# Modules whose classes may declare bindings (packages: every module in them).
_OWNER_MODULES = ("tui.app",)
_OWNER_PACKAGES = ("tui.screens", "tui.widgets")

# How prose names a key (the rest: F keys upper case, characters as Textual shows them).
_PROSE = {
    "escape": "Esc", "enter": "Enter", "tab": "Tab", "space": "Space", "backspace": "Backspace",
    "delete": "Del", "insert": "Ins", "home": "Home", "end": "End", "pageup": "PgUp", "pagedown": "PgDn",
    "up": "\u2191", "down": "\u2193", "left": "\u2190", "right": "\u2192",
}

# "<chat.stop>" in a text: the key bound to that id.
_PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)>")

NO_KEY = "(no key)"  # a binding whose keys a keymap gave to another binding of its screen


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
    return set(declared(classes))


# --- where bindings are declared ---
def _owner_module_names(load: bool) -> list[str]:
    if not load:
        return sorted(name for name in list(sys.modules) if name in _OWNER_MODULES or name.startswith(tuple(p + "." for p in _OWNER_PACKAGES)))
    import pkgutil  # (not at the first frame)

    names = list(_OWNER_MODULES)
    for package in _OWNER_PACKAGES:
        path = importlib.import_module(package).__path__
        names += [f"{package}.{info.name}" for info in pkgutil.iter_modules(path) if not info.ispkg]
    for name in names:
        importlib.import_module(name)
    return names


def binding_owners(load: bool = True) -> list[type]:
    """The app's classes that declare ``BINDINGS``: all of them (their modules imported), or
    with ``load=False`` those whose modules are imported already.  The app first, then the
    screens and widgets by module name, each module's in the order they are written."""
    owners = []
    for name in _owner_module_names(load):
        module = sys.modules.get(name)
        classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == name and "BINDINGS" in vars(c)] if module else []
        owners += classes  # (a module's namespace keeps the order its classes are written in)
    return owners


def declared(owners) -> dict[str, tuple[type, object]]:
    """binding id -> (the class that declares it, its Binding), the first declaration of each id."""
    out: dict[str, tuple[type, object]] = {}
    for cls in owners:
        for binding in vars(cls).get("BINDINGS", []):
            binding_id = getattr(binding, "id", None)
            if binding_id and binding_id not in out:
                out[binding_id] = (cls, binding)
    return out


@functools.cache  # (a class's bindings never change: every text naming a key asks, the palette at each keystroke)
def _declaration(binding_id: str) -> tuple[type, object]:
    found = declared(binding_owners(load=False)).get(binding_id)
    if found is None:
        found = declared(binding_owners(load=True)).get(binding_id)
    if found is None:
        raise KeyError(f"no binding has the id {binding_id!r}")
    return found


# --- the keys now ---
def _split(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(",") if key.strip()]


def current_keys(app, binding_id: str) -> list[str]:
    """The keys (Textual's names, e.g. ``ctrl+t``) that run binding ``binding_id`` now: the
    user's keymap's (``App.set_keymap``), else the declared ones less those the keymap gave to
    another binding of the same class (Textual's ``BindingsMap.apply_keymap`` drops those)."""
    keymap = getattr(app, "_keymap", None) or {}  # (Textual keeps the keymap here, normalized)
    if binding_id in keymap:
        return _split(keymap[binding_id])
    owner, binding = _declaration(binding_id)
    taken = set()
    for cls in owner.__mro__:
        for other in vars(cls).get("BINDINGS", []):
            other_id = getattr(other, "id", None)
            if other_id and other_id != binding_id and other_id in keymap:
                taken.update(_split(keymap[other_id]))
    return [key for key in _split(binding.key) if key not in taken]


def key_label(key: str) -> str:
    """A key as prose names it: ``ctrl+t`` -> ``Ctrl+T``, ``f3`` -> ``F3``, ``escape`` -> ``Esc``,
    ``slash`` -> ``/``, ``r`` -> ``r``."""
    *modifiers, base = key.split("+")
    if base in _PROSE:
        name = _PROSE[base]
    elif re.fullmatch(r"f\d+", base):
        name = base.upper()
    else:
        name = format_key(base)
    if modifiers and len(name) == 1:
        name = name.upper()
    return "+".join([m.capitalize() for m in modifiers] + [name])


def key_for(app, binding_id: str) -> str:
    """The key of binding ``binding_id`` now, in prose (its first key, if it has several)."""
    keys = current_keys(app, binding_id)
    return key_label(keys[0]) if keys else NO_KEY


def keys_for(app, binding_id: str, sep: str = " / ") -> str:
    """Every key of binding ``binding_id`` now, in prose: ``Ctrl+J / Shift+Enter``."""
    keys = current_keys(app, binding_id)
    return sep.join(key_label(key) for key in keys) if keys else NO_KEY


def key_display(app, binding_id: str) -> str:
    """The key of binding ``binding_id`` now as the footer shows it (``esc``, ``^x``): for the
    short hints that sit next to the footer's keys, such as the streaming reply's "esc stops"."""
    keys = current_keys(app, binding_id)
    return app.get_key_display(Binding(keys[0], "")) if keys else NO_KEY


def with_keys(app, text: str) -> str:
    """``text`` with each ``<chat.stop>``-like binding id replaced by that binding's key now (prose)."""
    return _PLACEHOLDER.sub(lambda m: key_for(app, m.group(1)), text)


def placeholders(text: str) -> list[str]:
    """The binding ids a text names (for tests: each must exist)."""
    return _PLACEHOLDER.findall(text)
