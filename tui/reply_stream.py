"""The one streaming worker behind every reply the app shows: the chat's and each side of
compare.  It runs on a worker thread and only posts messages (``ReplyStarted``, then
``ReplyProgress`` at most once per ``interval``, then exactly one ``ReplyDone``, whatever
happens) to the widget that started it, which tells its streams apart by ``reply_id``."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from tui.messages import ReplyDone, ReplyProgress, ReplyStarted


def stream_reply(target, reply_id: int, chat, prompt: Callable[[], tuple[list[int], int]], sampling, stop,
                 interval: float, details: bool = False) -> None:
    """Decode ``chat``'s reply to ``prompt()`` (its token ids and the whole turns it left out)
    until it ends or ``stop`` is set.  Updates are batched: the first piece at once, then at
    most one per ``interval`` seconds, so the UI's work does not take the decode's turns at the
    GIL (``ReplyDone`` carries the whole text, so nothing is lost between updates).
    ``details``: collect each token's probability and top choices (the inspector)."""
    from engine.events import GenerationFailed, GenerationFinished, GenerationStarted, TokenGenerated

    try:
        ids, dropped = prompt()
        pieces: list[str] = []
        choices: list = []
        posted = float("-inf")
        for event in chat.stream(ids, sampling, stop, details=details):
            if isinstance(event, TokenGenerated):
                choices.extend(event.choices)
                pieces.append(event.text)
                now = time.monotonic()
                if now - posted >= interval:
                    posted = now
                    target.post_message(ReplyProgress(reply_id, "".join(pieces)))
            elif isinstance(event, GenerationStarted):
                target.post_message(ReplyStarted(reply_id, replace(event, dropped_turns=dropped) if dropped else event))
            elif isinstance(event, (GenerationFinished, GenerationFailed)):
                target.post_message(ReplyDone(reply_id, event, choices))
                return
    except Exception as exc:  # the UI must hear about any failure
        target.post_message(ReplyDone(reply_id, GenerationFailed(error=f"{type(exc).__name__}: {exc}".splitlines()[0])))
        return
    target.post_message(ReplyDone(reply_id, GenerationFailed(error="the model stopped without finishing")))
