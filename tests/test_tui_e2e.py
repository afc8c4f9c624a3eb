"""End to end: the installed `minigpt-tui` in a real terminal (tmux): launch, chat with a tiny
checkpoint, visit the training screen, back to the chat (F2 -> F1 -> type -> reply), copy the
reply, open the token inspector, visit the picker, quit with Ctrl+Q (exit code 0)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import skip_unless_ci
from test_tui_support import ckpt_home  # noqa: F401  (fixture)

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.slow  # a real terminal and the installed command: run with -m slow (CI does)


@pytest.fixture(autouse=True)
def need_tmux():
    if TMUX is None:
        skip_unless_ci("tmux is not installed (apt-get install -y tmux)")


def _command() -> str:
    exe = Path(sys.executable).with_name("minigpt-tui")
    return str(exe) if exe.exists() else (shutil.which("minigpt-tui") or f"{sys.executable} -m tui")


class Tmux:
    def __init__(self, tmp: Path):
        self.socket = f"minigpt-e2e-{os.getpid()}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "app")

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def wait_stable(self, timeout: float, quiet: float = 1.5) -> str:
        """Until the screen stops changing for ``quiet`` seconds (a reply has finished)."""
        deadline = time.monotonic() + timeout
        last, since = self.screen(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet and "thinking" not in now:
                return now
        raise AssertionError(f"the screen never settled:\n{last}")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "app", *keys)


def test_installed_app_in_tmux(ckpt_home, tiny_checkpoint, tmp_path):
    from engine.store.settings import Sampling, Settings, save_settings

    save_settings(Settings(active_checkpoint=tiny_checkpoint, sampling=Sampling(max_new_tokens=12, seed=3)))
    exit_file = tmp_path / "exit-code"
    env = {k: os.environ[k] for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "MINIGPT_OFFLINE", "HF_HUB_OFFLINE")}
    exports = " ".join(f"{k}={v!s}" for k, v in env.items())
    script = f"cd {tmp_path} && env {exports} TERM=xterm-256color {_command()}; echo $? > {exit_file}; sleep 5"
    tmux = Tmux(tmp_path)
    tmux.run("new-session", "-d", "-s", "app", "-x", "80", "-y", "24", script)
    try:
        tmux.wait_for(f"\u25cf {tiny_checkpoint}", 120)  # the model is loaded and shown as active
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
        tmux.keys("-l", "second message")
        tmux.keys("Enter")
        tmux.wait_for("second message", 10)
        tmux.wait_stable(60)  # the second reply streamed to its end
        # copy the reply (OSC 52 to the terminal; the app says so)
        tmux.keys("C-o")
        tmux.wait_for("Copied the last reply", 10)
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
        deadline = time.monotonic() + 30
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert exit_file.exists(), tmux.screen()
        assert exit_file.read_text().strip() == "0"
    finally:
        subprocess.run([TMUX, "-L", tmux.socket, "kill-server"], capture_output=True)


@pytest.mark.timeout(1200)  # the real first run: 3 minutes of training, its tokenizer, data and evaluations
def test_a_new_user_trains_the_default_chat_model_and_gets_a_reply_that_ends(tmp_path):
    """An empty store, as a new user has it: Enter on the first-run panel trains the default model
    (a chat model on the offline chitchat conversations, the real 3-minute budget), the chat
    switches to it, and "hi, how are you?" gets a reply that ends by itself before the token limit."""
    import re

    from engine.store.settings import Sampling

    env = {k: os.environ[k] for k in ("MINIGPT_OFFLINE", "HF_HUB_OFFLINE")}
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache")):
        env[var] = str(tmp_path / sub)
    exports = " ".join(f"{k}={v!s}" for k, v in env.items())
    exit_file = tmp_path / "exit-code"
    script = f"cd {tmp_path} && env {exports} TERM=xterm-256color {_command()}; echo $? > {exit_file}; sleep 5"
    tmux = Tmux(tmp_path)
    tmux.run("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", script)
    try:
        tmux.wait_for("Enter", 60)  # the first-run panel
        tmux.keys("Enter")
        tmux.wait_for("Training: running", 120)
        tmux.wait_for("Training: finished", 900)
        tmux.keys("F1")
        tmux.wait_for("\u25cf seed-chitchat-", 120)  # saved, and active in the chat
        tmux.wait_for("fast decode", 120)
        tmux.keys("-l", "hi, how are you?")
        tmux.keys("Enter")
        shown = tmux.wait_for("tok/s", 120)
        tokens = int(re.search(r"(\d+) tok \u00b7", shown).group(1))
        assert 0 < tokens < Sampling().max_new_tokens, shown  # it ended its turn by itself
        tmux.keys("C-q")
        deadline = time.monotonic() + 60
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert exit_file.read_text().strip() == "0"
    finally:
        subprocess.run([TMUX, "-L", tmux.socket, "kill-server"], capture_output=True)
