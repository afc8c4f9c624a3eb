"""Show user and model text literally.

Model output and user input are data, never markup: ``[bold]``, ``[link=...]`` and ANSI escape
sequences must appear as typed.  ``rich.text.Text`` never parses markup; control characters
(which could drive the terminal) are replaced by visible stand-ins (the Unicode "control
pictures", e.g. ESC -> ␛).  Newlines and tabs are kept.
"""

from __future__ import annotations

from rich.text import Text

_TABLE = {i: chr(0x2400 + i) for i in range(32) if i not in (9, 10)}
_TABLE[0x7F] = "\u2421"  # ␡
_TABLE.update({i: f"\\x{i:02x}" for i in range(0x80, 0xA0)})  # C1 controls (CSI 0x9b ...)
_TABLE.update({0x2028: "\u21b5", 0x2029: "\u00b6"})  # line/paragraph separators


def visible(text: str) -> str:
    """``text`` with every control character (except newline and tab) made visible."""
    return text.replace("\r\n", "\n").translate(_TABLE)


def literal(text: str, style: str = "") -> Text:
    """A rich Text that shows ``text`` exactly (no markup, no escapes reach the terminal)."""
    return Text(visible(text), style=style)


def one_line(text: str, limit: int = 80) -> str:
    """A single visible line (titles, table cells)."""
    flat = " ".join(visible(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"
