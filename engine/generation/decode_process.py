"""Replies decoded in a child process, so the app's UI never takes the decode's turns.

A reply decoded on a thread shares the interpreter lock with the app: every repaint of the
streaming reply stalls the decode (bench/app_latency.py measured a 90-token reply on screen at
0.69x the rate of the same reply decoded with no UI).  ``DecodeProcess`` runs the same
``ChatModel.stream`` in a child Python process that loads the same checkpoint (or model
folder) and warms up the same fast path; events come back over a pipe, pickled, as the
dataclasses of engine/events.py.  Same code, same weights, same seed: the same tokens.

The protocol, one pickled tuple per message (``multiprocessing.connection`` framing):

* parent -> child: ``("reply", rid, prompt, sampling, details)`` (text or token ids, as
  ``ChatModel.stream`` takes them), ``("cancel", rid)``;
  the end of the pipe (the parent exits or dies) ends the child.
* child -> parent: ``("ready", note)`` or ``("failed", error)`` once, then ``("event", rid,
  event)`` for each event of each reply.

Cancelling is asynchronous in the child (a token or two may be decoded before it sees the
request), so the parent stops yielding at once: no token after ``stop`` is set, and the
``GenerationFinished`` it yields counts the tokens it yielded, as the in-process loop does.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from engine.events import GenerationEvent, GenerationFailed, GenerationFinished, TokenGenerated

STARTUP_TIMEOUT_S = 300.0
_POLL_S = 0.02  # how often a waiting reply looks at its stop event


class DecodeProcess:
    """A child process that decodes replies for one model.

    ``source``: ``("checkpoint", name)`` or ``("folder", path)``.  ``start()`` launches the
    child and waits until it has loaded the model and warmed up (call it from a worker
    thread); ``ready`` says whether it can take replies, ``problem`` why not.  ``stream`` is
    ``ChatModel.stream``'s counterpart; one reply at a time.  ``close()`` ends the child.
    """

    def __init__(self, source: tuple[str, str], decode: str = "auto"):
        self.source = source
        self.decode = decode
        self.ready = False
        self.problem: str | None = None
        self.note = ""
        self._proc: subprocess.Popen | None = None
        self._to_child = None
        self._replies: dict[int, queue.Queue] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one reply at a time; also guards sends
        self._started = threading.Event()

    # --- life cycle ---
    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> bool:
        """Launch the child and wait for it to be ready; False (and ``problem``) if it is not."""
        from multiprocessing.connection import Connection

        down_r, down_w = os.pipe()  # parent -> child
        up_r, up_w = os.pipe()  # child -> parent
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds engine/
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "engine.generation.decode_process", str(down_r), str(up_w)],
                pass_fds=(down_r, up_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # never onto the terminal the app draws on
                env=env,
                start_new_session=True,  # the terminal's Ctrl+C is the app's to handle
            )
        except (OSError, ValueError) as exc:  # (ValueError: no pass_fds on this platform)
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            self.problem = f"cannot start: {exc}"
            return False
        finally:
            if self._proc is not None:
                os.close(down_r)
                os.close(up_w)
        self._to_child = Connection(down_w, readable=False)
        from_child = Connection(up_r, writable=False)
        if not self._send((self.source, self.decode)):  # the child died at once
            from_child.close()
            self.close()
            return False
        threading.Thread(target=self._read, args=(from_child,), name="minigpt-decode-reader", daemon=True).start()
        if not self._started.wait(timeout):
            self.problem = "did not start in time"
            self.close()
        return self.ready

    def close(self) -> None:
        """End the child now (it holds nothing to save; a reply it was decoding ends here)."""
        self.ready = False
        conn, self._to_child = self._to_child, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def busy(self) -> bool:
        """A reply is decoding (a second one at the same time decodes in the caller's process)."""
        return self._lock.locked()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _read(self, conn) -> None:
        """The reader thread: hand each message to the reply it belongs to."""
        try:
            while True:
                msg = conn.recv()
                kind = msg[0]
                if kind == "event":
                    q = self._replies.get(msg[1])
                    if q is not None:
                        q.put(msg[2])
                elif kind == "ready":
                    self.note, self.ready = msg[1], True
                    self._started.set()
                elif kind == "failed":
                    self.problem = msg[1]
                    self._started.set()
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            self.ready = False
            if self.problem is None:
                self.problem = "the decode process ended"
            self._started.set()
            for q in list(self._replies.values()):
                q.put(None)  # wake a waiting reply: the child is gone

    # --- replies ---
    def stream(
        self, prompt: str | list[int], sampling, stop: threading.Event, details: bool = False
    ) -> Iterator[GenerationEvent]:
        with self._lock:
            rid = next(self._ids)
            q: queue.Queue = queue.Queue()
            self._replies[rid] = q
            ended = False
            try:
                for event in self._stream(rid, q, prompt, sampling, stop, details):
                    ended = isinstance(event, (GenerationFinished, GenerationFailed))
                    yield event
            finally:
                self._replies.pop(rid, None)
                if not ended:  # the caller stopped reading: the child stops decoding it
                    self._send(("cancel", rid))

    def _stream(self, rid, q, prompt, sampling, stop, details):
        t0 = time.perf_counter()
        if not self._send(("reply", rid, prompt if isinstance(prompt, str) else list(prompt), sampling, details)):
            yield GenerationFailed(error=f"decode process: {self.problem}")
            return
        pieces: list[str] = []
        last: TokenGenerated | None = None
        cancel_sent = False
        while True:
            if stop.is_set() and not cancel_sent:
                cancel_sent = True
                self._send(("cancel", rid))
            try:
                event = q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if event is None:  # the child is gone (a stopped reply still ends as stopped)
                if cancel_sent:
                    yield _cancelled(None, pieces, last, t0)
                else:
                    yield GenerationFailed(error=f"decode process: {self.problem}")
                return
            if cancel_sent:
                # nothing after the stop: finish with what was shown
                if isinstance(event, (GenerationFinished, GenerationFailed)):
                    yield _cancelled(event, pieces, last, t0)
                    return
                continue
            if isinstance(event, TokenGenerated):
                pieces.append(event.text)
                last = event
            yield event
            if isinstance(event, (GenerationFinished, GenerationFailed)):
                return

    def _send(self, msg) -> bool:
        conn = self._to_child
        if conn is None:
            return False
        try:
            conn.send(msg)
            return True
        except (OSError, ValueError):
            self.ready = False
            if self.problem is None:
                self.problem = "the decode process ended"
            return False


def _cancelled(event, pieces: list[str], last: TokenGenerated | None, t0: float) -> GenerationEvent:
    """The end of a reply stopped by the user, counting what was yielded before the stop."""
    if isinstance(event, GenerationFailed):
        return event
    timed = isinstance(event, GenerationFinished) and last is not None
    return GenerationFinished(
        text="".join(pieces),
        new_tokens=last.index + 1 if last is not None else 0,
        stop_reason="cancelled",
        time_to_first_token_s=event.time_to_first_token_s if timed else None,
        tokens_per_s=event.tokens_per_s if timed else None,
        elapsed_s=time.perf_counter() - t0,
    )


# --- the child ---
def _serve(read_fd: int, write_fd: int) -> None:
    from multiprocessing.connection import Connection

    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    send_lock = threading.Lock()

    def send(msg) -> None:
        with send_lock:
            outbox.send(msg)

    try:
        (kind, ref), decode = inbox.recv()
    except (EOFError, OSError):
        return
    try:
        import torch

        from engine.generation.chat_model import ChatModel

        torch.set_num_threads(1)  # a decode step is tiny ops: one thread (engine/generation/threads.py)
        if kind == "checkpoint":
            chat = ChatModel.from_checkpoint(ref, device="cpu")
        else:
            chat = ChatModel.from_folder(ref, device="cpu")
        chat.decode = decode
        note = chat.warm_up()
    except Exception as exc:  # told to the parent, which keeps decoding in-process
        send(("failed", f"{type(exc).__name__}: {exc}".splitlines()[0]))
        return
    send(("ready", note))

    requests: queue.Queue = queue.Queue()
    stops: dict[int, threading.Event] = {}

    def read() -> None:
        try:
            while True:
                msg = inbox.recv()
                if msg[0] == "reply":
                    stops[msg[1]] = threading.Event()
                    requests.put(msg)
                elif msg[0] == "cancel" and msg[1] in stops:
                    stops[msg[1]].set()
        except (EOFError, OSError):
            requests.put(None)  # the parent is gone

    threading.Thread(target=read, name="minigpt-decode-inbox", daemon=True).start()
    while True:
        msg = requests.get()
        if msg is None:
            return
        _, rid, prompt, sampling, details = msg
        try:
            for event in chat.stream(prompt, sampling, stops[rid], details):
                send(("event", rid, event))
        except (OSError, ValueError):  # the pipe to the parent broke
            return
        finally:
            stops.pop(rid, None)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
