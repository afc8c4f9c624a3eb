"""End to end: the installed `minigpt-tui` in a real terminal (tmux), with the user's defaults
(replies decode in the app's child process, engine/generation/decode_process.py): launch, chat
with a tiny checkpoint, visit the training screen, back to the chat (F2 -> F1 -> type -> reply),
copy the reply (OSC 52 into tmux's buffer), open the token inspector, visit the picker, quit with
Ctrl+Q (exit code 0); Esc in the middle of a streaming reply; `kill -9` of the app while a reply
streams (its decode child goes too, the conversations database stays intact)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import skip_unless_ci
from test_decode_process import _alive
from test_tui_support import ckpt_home  # noqa: F401  (fixture)

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.slow  # a real terminal and the installed command: run with -m slow (CI does)

# tests/conftest.py turns the decode process off for the in-process tests; a user has it on
APP_ENV = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "MINIGPT_OFFLINE", "HF_HUB_OFFLINE")
DECODE_CHILD = "engine.generation.decode_process"


@pytest.fixture(autouse=True)
def need_tmux():
    if TMUX is None:
        skip_unless_ci("tmux is not installed (apt-get install -y tmux)")


def _command() -> str:
    exe = Path(sys.executable).with_name("minigpt-tui")
    return str(exe) if exe.exists() else (shutil.which("minigpt-tui") or f"{sys.executable} -m tui")


def _launch_script(env: dict[str, str], cwd: Path, exit_file: Path) -> str:
    """The shell line a pane runs: the app with ``env`` and nothing of the tests' own switches
    (``env -u``: the tmux server was started from the test process), its exit code to a file.
    The app's stderr (where Textual draws) stays on the terminal."""
    exports = " ".join(f"{k}={v!s}" for k, v in env.items())
    return f"cd {cwd} && env -u MINIGPT_DECODE_PROCESS {exports} TERM=xterm-256color {_command()}; echo $? > {exit_file}; sleep 5"


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Tmux:
    def __init__(self, tmp: Path):
        self.socket = f"minigpt-e2e-{os.getpid()}"
        self.tmp = tmp
        # the server (started by the first command) hands its environment to the pane's shell
        self.env = {k: v for k, v in os.environ.items() if k != "MINIGPT_DECODE_PROCESS"}

    def run(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, *args], check=True, capture_output=True, text=True, env=self.env).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "app")

    def status(self) -> str:
        """The chat's status line (the screen's first line)."""
        return self.screen().splitlines()[0]

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        return self.wait_until(lambda shown: text in shown, timeout, repr(text))

    def wait_until(self, condition, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if condition(shown):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{what} never appeared within {timeout:.0f}s; screen:\n{self.screen()}")

    def wait_reply_done(self, ctx_before: str, timeout: float = 60.0) -> str:
        """Until the reply just sent has ended: the status line's context meter has moved on from
        ``ctx_before`` (the reply started: its prompt holds the turns before it) and no turn says
        it is streaming ("esc stops", "thinking")."""

        def done(shown: str) -> bool:
            return _ctx(shown.splitlines()[0]) not in (None, ctx_before) and "esc stops" not in shown and "thinking" not in shown

        return self.wait_until(done, timeout, "the end of the reply")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "app", *keys)

    def app_pid(self, timeout: float = 30.0) -> int:
        """The app's process: the one child of the pane's shell."""
        shell = int(self.run("display-message", "-p", "-t", "app", "#{pane_pid}").strip())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = _children(shell)
            if len(kids) == 1:
                return kids[0]
            time.sleep(0.1)
        raise AssertionError(f"the pane's shell {shell} has no single child: {_children(shell)}")

    def kill_server(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True)


def _ctx(status: str) -> str | None:
    found = re.search(r"ctx (\d+/\d+)", status)
    return found.group(1) if found else None


def _decode_child(app_pid: int, timeout: float = 120.0) -> int:
    """The app's decode child process (it started with the model)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p in _children(app_pid) if DECODE_CHILD in _cmdline(p)]
        if kids:
            assert len(kids) == 1, kids
            return kids[0]
        time.sleep(0.1)
    raise AssertionError(f"the app {app_pid} has no decode child: {[_cmdline(p) for p in _children(app_pid)]}")


def _wait_exit(exit_file: Path, tmux: Tmux, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert exit_file.exists(), f"the app did not exit within {timeout:.0f}s:\n{tmux.screen()}"
    return exit_file.read_text().strip()


def test_installed_app_in_tmux(ckpt_home, tiny_checkpoint, tmp_path):
    from engine.store.settings import Sampling, Settings, save_settings
    from tui.store.conversations import ConversationStore

    save_settings(Settings(active_checkpoint=tiny_checkpoint, sampling=Sampling(max_new_tokens=12, seed=3)))
    exit_file = tmp_path / "exit-code"
    env = {k: os.environ[k] for k in APP_ENV}
    tmux = Tmux(tmp_path)
    tmux.run("new-session", "-d", "-s", "app", "-x", "100", "-y", "24", _launch_script(env, tmp_path, exit_file))
    # an application's OSC 52 (the app's copy) sets a tmux buffer
    tmux.run("set-option", "-g", "set-clipboard", "on")
    try:
        tmux.wait_for(f"\u25cf {tiny_checkpoint}", 120)  # the model is loaded and shown as active
        # the user's default decode path: a child process of the app
        tmux.wait_for("fast decode (process)", 120)
        _decode_child(tmux.app_pid())
        tmux.keys("-l", "Hello [b]model[/b]")
        tmux.keys("Enter")
        tmux.wait_for("Hello [b]model[/b]", 10)  # literal, not bold markup
        shown = tmux.wait_for("tok/s", 60)  # the reply finished and its speed is in the status
        assert "1st token" in shown
        lines = shown.splitlines()
        header = next(i for i, line in enumerate(lines) if line.strip().endswith(tiny_checkpoint) and "\u25cf" not in line)
        assert lines[header + 1].strip(" \u2588\u258c\u2590"), "the reply is empty on screen"
        tmux.keys("F2")
        tmux.wait_for("Training:", 10)
        tmux.wait_for("New run", 10)
        # back to the chat: what the user types lands in the input, and gets a reply
        tmux.keys("F1")
        tmux.wait_for("1st token", 10)
        ctx_before = _ctx(tmux.status())
        assert ctx_before, tmux.status()
        tmux.keys("-l", "second message")
        tmux.keys("Enter")
        tmux.wait_for("second message", 10)
        tmux.wait_reply_done(ctx_before)  # the second reply streamed to its end
        store = ConversationStore()
        (conv,) = store.list()
        turns = store.turns(conv.id)
        assert [t.role for t in turns] == ["user", "assistant"] * 2 and turns[3].content.strip()
        store.close()
        # copy the reply: OSC 52 to the terminal, which holds it in its buffer; the app says so
        tmux.keys("C-o")
        tmux.wait_for("Copied the last reply", 10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tmux.run("list-buffers", "-F", "#{buffer_name}").strip() == "":
            time.sleep(0.1)
        assert tmux.run("show-buffer") == turns[3].content
        # the token inspector on that reply
        tmux.keys("F8")
        shown = tmux.wait_for("Token inspector", 10)
        assert "p = " in shown and "probability" in shown
        tmux.keys("Right")
        tmux.wait_for("token 2/", 10)
        tmux.keys("Escape")
        tmux.keys("F3")
        shown = tmux.wait_for("Saved checkpoints", 10)
        assert tiny_checkpoint in shown
        tmux.keys("C-q")
        assert _wait_exit(exit_file, tmux) == "0"
    finally:
        tmux.kill_server()


def _endless_reply_app(tmux: Tmux, tiny_checkpoint: str, tmp_path: Path) -> tuple[int, int, Path]:
    """The app on the tiny checkpoint with replies that only the user's Esc (or the far token
    limit) ends (greedy, no penalty: the tiny model loops and never says its end token), ready to
    decode in its child process: (the app's pid, the decode child's pid, the exit-code file)."""
    from engine.store.settings import Sampling, Settings, save_settings

    endless = Sampling(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=100_000, seed=1)
    save_settings(Settings(active_checkpoint=tiny_checkpoint, sampling=endless))
    exit_file = tmp_path / "exit-code"
    env = {k: os.environ[k] for k in APP_ENV}
    # (100 columns, as a new user's: a stopped reply's status line says "stopped" before its
    # timings, so a narrow terminal cuts the timings, never how the reply ended)
    tmux.run("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", _launch_script(env, tmp_path, exit_file))
    tmux.wait_for("fast decode (process)", 120)
    app = tmux.app_pid()
    return app, _decode_child(app), exit_file


def _streaming(tmux: Tmux) -> str:
    """Until the reply just sent streams text (not "thinking" any more, still "esc stops")."""
    return tmux.wait_until(lambda shown: "esc stops" in shown and "thinking" not in shown, 60, "a streaming reply")


def _stop(tmux: Tmux) -> str:
    """Esc, then until the reply shows as stopped and the status line says so."""
    tmux.keys("Escape")
    return tmux.wait_until(lambda shown: "[stopped]" in shown and "stopped" in shown.splitlines()[0], 30, "the stopped reply")


def test_escape_stops_a_streaming_reply_in_tmux(ckpt_home, tiny_checkpoint, tmp_path):
    """Esc in the middle of a reply decoding in the app's child process: the reply stops where it
    is (kept, marked stopped, stored), and the next message gets a reply from the same child."""
    from tui.store.conversations import ConversationStore

    tmux = Tmux(tmp_path)
    try:
        app, child, exit_file = _endless_reply_app(tmux, tiny_checkpoint, tmp_path)
        tmux.keys("-l", "In the beginning")
        tmux.keys("Enter")
        _streaming(tmux)
        shown = _stop(tmux)
        tokens = int(re.search(r"(\d+) tok\b", shown.splitlines()[0]).group(1))
        assert 0 < tokens < 100_000 and "token limit" not in shown.splitlines()[0]
        store = ConversationStore()
        (conv,) = store.list()
        turns = store.turns(conv.id)
        assert [t.role for t in turns] == ["user", "assistant"] and turns[1].stopped
        partial = turns[1].content
        assert partial.strip()
        # the next message gets a reply from the same child: it streams text (its context meter
        # counts the turns before it), and Esc stops it too.  (Changing the token limit through F4
        # here raced the dialog's first focus; tests/test_tui_real_decode.py lets a next reply run
        # to its limit on both decode paths.)
        ctx_before = _ctx(shown.splitlines()[0])
        tmux.keys("-l", "And then")
        tmux.keys("Enter")
        tmux.wait_for("And then", 10)
        tmux.wait_until(lambda now: _ctx(now.splitlines()[0]) not in (None, ctx_before), 30, "the next reply to start")
        _streaming(tmux)
        tmux.keys("Escape")
        shown = tmux.wait_until(lambda now: "esc stops" not in now and "stopped" in now.splitlines()[0], 30, "the next reply to stop")
        status = shown.splitlines()[0]
        assert "[stopped]" in shown and int(re.search(r"(\d+) tok\b", status).group(1)) < 100_000
        # the first stopped reply did not grow meanwhile (the store keeps what was shown)
        turns = store.turns(conv.id)
        assert [t.role for t in turns] == ["user", "assistant"] * 2
        assert turns[1].content == partial and turns[1].stopped and turns[3].content.strip() and turns[3].stopped
        store.close()
        assert "fast decode (process)" in status and _alive(child)  # the same child took the next reply
        tmux.keys("C-q")
        assert _wait_exit(exit_file, tmux) == "0"
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child) and not _alive(app)
    finally:
        tmux.kill_server()


def test_kill_9_while_a_reply_streams_takes_the_decode_child_too(ckpt_home, tiny_checkpoint, tmp_path):
    """`kill -9` of the app while its child process decodes a reply: the child does not outlive
    it, and the conversations database is intact with the turns stored before the kill."""
    import signal

    from engine.store.paths import conversations_db

    tmux = Tmux(tmp_path)
    child = None
    try:
        app, child, exit_file = _endless_reply_app(tmux, tiny_checkpoint, tmp_path)
        tmux.keys("-l", "first message")
        tmux.keys("Enter")
        _streaming(tmux)
        _stop(tmux)
        tmux.keys("-l", "second message")
        tmux.keys("Enter")
        tmux.wait_for("second message", 10)
        _streaming(tmux)
        assert _alive(child)
        os.kill(app, signal.SIGKILL)
        assert _wait_exit(exit_file, tmux) == "137"  # 128 + SIGKILL: the shell saw it die
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), f"the decode child {child} outlived the app: {_cmdline(child)}"
        db = sqlite3.connect(conversations_db())
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            rows = db.execute("SELECT role, content, stopped FROM messages ORDER BY id").fetchall()
        finally:
            db.close()
        assert [r[0] for r in rows[:3]] == ["user", "assistant", "user"], rows
        assert rows[0][1] == "first message" and rows[1][1].strip() and rows[1][2] and rows[2][1] == "second message"
    finally:
        tmux.kill_server()
        if child is not None and _alive(child):  # (a failed run leaves no orphan behind)
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(1200)  # the real first run: 3 minutes of training, its tokenizer, data and evaluations
def test_a_new_user_trains_the_default_chat_model_and_gets_a_reply_that_ends(tmp_path):
    """An empty store, as a new user has it: Enter on the first-run panel trains the default model
    (a chat model on the offline chitchat conversations, the real 3-minute budget), the chat
    switches to it, and "hi, how are you?" gets a reply that ends by itself before the token limit."""
    from engine.store.settings import Sampling

    env = {k: os.environ[k] for k in ("MINIGPT_OFFLINE", "HF_HUB_OFFLINE")}
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache")):
        env[var] = str(tmp_path / sub)
    exit_file = tmp_path / "exit-code"
    tmux = Tmux(tmp_path)
    tmux.run("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", _launch_script(env, tmp_path, exit_file))
    try:
        tmux.wait_for("Enter", 60)  # the first-run panel
        tmux.keys("Enter")
        tmux.wait_for("Training: running", 120)
        tmux.wait_for("Training: finished", 900)
        tmux.keys("F1")
        tmux.wait_for("\u25cf seed-chitchat-", 120)  # saved, and active in the chat
        tmux.wait_for("fast decode (process)", 120)  # the user's default: a decode child
        tmux.keys("-l", "hi, how are you?")
        tmux.keys("Enter")
        shown = tmux.wait_for("tok/s", 120)
        tokens = int(re.search(r"(\d+) tok \u00b7", shown).group(1))
        assert 0 < tokens < Sampling().max_new_tokens, shown  # it ended its turn by itself
        tmux.keys("C-q")
        assert _wait_exit(exit_file, tmux, 60) == "0"
    finally:
        tmux.kill_server()


def test_versions_survive_a_restart_and_a_search_opens_its_branch_in_tmux(ckpt_home, tiny_checkpoint, tmp_path):
    """Branches in a real 80x24 terminal: two regenerations and three edits (Ctrl+R, Ctrl+G) keep
    every version ("2/2", "3/3" on screen); after Ctrl+Q and a new launch, Alt+Left/Right (sent by
    the terminal as escape sequences) walk a turn's versions, and a search hit in a branch that is
    not shown opens that branch."""
    from engine.store.settings import Sampling, Settings, save_settings
    from engine.store.paths import conversations_db

    save_settings(Settings(active_checkpoint=tiny_checkpoint, sampling=Sampling(max_new_tokens=6)))
    env = {k: os.environ[k] for k in APP_ENV}

    def replies() -> int:
        db = sqlite3.connect(conversations_db())
        try:
            return db.execute("SELECT COUNT(*) FROM messages WHERE role = 'assistant'").fetchone()[0]
        except sqlite3.OperationalError:  # not made yet
            return 0
        finally:
            db.close()

    def reply_after(tmux: Tmux, *keys: str) -> str:
        """Send keys; until the reply they ask for is stored and nothing streams on screen."""
        count = replies()
        for key in keys:
            tmux.keys(*key) if isinstance(key, tuple) else tmux.keys(key)
        deadline = time.monotonic() + 60
        while replies() != count + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        if replies() != count + 1:
            db = sqlite3.connect(conversations_db())
            rows = db.execute("SELECT id, parent_id, role, content FROM messages").fetchall()
            raise AssertionError(f"{count} -> {replies()} {rows}\n{tmux.screen()}")
        return tmux.wait_until(lambda shown: "esc stops" not in shown and "thinking" not in shown, 10, "the reply on screen")

    def edit(tmux: Tmux, text: str) -> str:
        # At once: C-g (a priority binding) puts the message in the input before the input sees
        # C-u (its own key: delete to the start of the line).  Then wait for the input to be
        # empty: the input's keys run after bubbling up to the app, so text typed at machine
        # speed could land before C-u did (a person types slower).
        tmux.keys("C-g", "C-u")
        tmux.wait_until(
            lambda now: "Enter saves it as a new version" in now and not "".join(now.splitlines()[-4:-1]).strip("\u2502\u256d\u256e\u2570\u256f\u2500 "),
            10, "the emptied input",
        )
        return reply_after(tmux, ("-l", text), "Enter")

    def launch(tmux: Tmux, exit_file: Path) -> None:
        tmux.run("new-session", "-d", "-s", "app", "-x", "80", "-y", "24", _launch_script(env, tmp_path, exit_file))
        tmux.wait_for("fast decode (process)", 120)

    tmux = Tmux(tmp_path)
    try:
        first_exit = tmp_path / "exit-1"
        launch(tmux, first_exit)
        reply_after(tmux, ("-l", "apples"), "Enter")
        reply_after(tmux, "C-r")
        shown = reply_after(tmux, "C-r")
        assert "\u25c2 3/3 \u25b8" in shown  # the reply regenerated twice: its third version, the turn the keys switch
        shown = edit(tmux, "bananas")  # the first message, edited: a second version, with its own reply
        assert "bananas" in shown and "apples" not in shown and "\u25c2 2/2 \u25b8" in shown
        reply_after(tmux, ("-l", "cherries"), "Enter")
        edit(tmux, "dates")
        shown = edit(tmux, "figs")
        assert "\u25c2 3/3 \u25b8" in shown and "bananas" in shown and "figs" in shown
        tmux.keys("C-q")
        assert _wait_exit(first_exit, tmux) == "0"
        tmux.run("kill-session", "-t", "app")  # (the pane lingers 5 s after the app)

        second_exit = tmp_path / "exit-2"
        launch(tmux, second_exit)
        tmux.keys("F5")
        tmux.wait_for("Conversations", 10)
        tmux.keys("Enter")
        shown = tmux.wait_for("figs", 10)  # the path chosen last, after the restart
        assert "bananas" in shown and "\u25c2 3/3 \u25b8" in shown
        def after(key: str, *want: str, gone: tuple[str, ...] = ()) -> str:
            tmux.keys(key)
            return tmux.wait_until(lambda now: all(w in now for w in want) and not any(g in now for g in gone), 10, f"{want} after {key}")

        after("M-Left", "\u25c2 2/3 \u25b8", "dates", gone=("figs",))
        after("M-Left", "\u25c2 1/3 \u25b8", "cherries", gone=("figs", "dates"))
        after("M-Up", "\u25c2 2/2 \u25b8", "bananas")  # the earlier turn with versions: the first message
        after("M-Left", "\u25c2 1/2 \u25b8", "apples", "3/3", gone=("bananas",))  # apples, its reply shown last: version 3 of 3
        after("M-Right", "\u25c2 2/2 \u25b8", "bananas", gone=("apples",))
        # a search hit in a branch not shown: "dates" (the second version of the third message)
        tmux.keys("F5")
        tmux.wait_for("Conversations", 10)
        tmux.keys("/")
        tmux.keys("-l", "dates")
        tmux.wait_for("\u00bbdates\u00ab", 10)
        tmux.keys("Enter")  # opens the best hit
        tmux.wait_until(
            lambda now: "dates" in now and "bananas" in now and not any(w in now for w in ("Conversations", "figs", "cherries")), 10, "the branch of the hit"
        )
        tmux.keys("C-q")
        assert _wait_exit(second_exit, tmux) == "0"
    finally:
        tmux.kill_server()
