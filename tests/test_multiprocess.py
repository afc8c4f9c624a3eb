"""Two training processes on CPU (``torchrun --nproc_per_node=2``, gloo): resume, one agreed run
name, and SIGTERM to one rank (both ranks stop at the same step; one consistent checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, minigpt_cmd

pytestmark = pytest.mark.slow


@pytest.fixture
def env(cli_env, tmp_path):
    env = dict(cli_env)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # a cold cache: both ranks need the tokenizer at once
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(args, env) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tui", *args]


def listed(env) -> list[dict]:
    r = subprocess.run(minigpt_cmd() + ["checkpoints", "list", "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout)


def test_resume_and_default_name_under_torchrun(env):
    # no --name: the ranks must agree on the default one (else rank 1 would wait on a lock-free
    # name of its own and nothing would be consistent); bpe:N is built once through the cache
    base = ["train", "--dataset", "builtin", "--preset", "tiny", "--tokenizer", "bpe:400", "--eval-every", "100"]
    r = subprocess.run(torchrun(base + ["--max-steps", "3"], env), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    names = [c["name"] for c in listed(env)]
    assert len(names) == 1 and names[0].startswith("tiny-builtin-"), names
    name = names[0]
    r = subprocess.run(torchrun(["train", "--resume", name, "--max-steps", "5"], env), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "steps 3->5" in r.stderr and "2 processes" in r.stderr and "Traceback" not in r.stderr
    info = listed(env)
    assert [c["name"] for c in info] == [name] and info[0]["ok"]
    assert info[0]["meta"]["steps"] == 5 and info[0]["meta"]["tokens_seen"] == 5 * 8 * 64 * 2
    assert not (env_path(env) / ".runs" / name).exists()  # the Trainer's work folder is gone after the run


def env_path(env):
    from pathlib import Path

    return Path(env["XDG_DATA_HOME"]) / "minigpt-tui" / "checkpoints"


def _worker_pid(agent: int, rank: int) -> int:
    """The pid of the torchrun worker with this RANK (a child of the agent)."""
    from pathlib import Path

    for _ in range(100):
        for child in Path(f"/proc/{agent}/task").glob("*/children"):
            for pid in child.read_text().split():
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if f"RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no worker with RANK={rank}")


def test_sigterm_to_one_rank_stops_both_with_one_checkpoint(env):
    """SIGTERM reaches rank 1 only: rank 0 (which alone saves) must stop at the same step and save,
    and both exit; no rank is left waiting in an all-reduce."""
    args = ["train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "100000", "--eval-every", "100000",
            "--save-every", "100000", "--name", "term"]
    proc = subprocess.Popen(torchrun(args, env), env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + 240
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("step ") or time.time() > deadline:
            break
    assert any(line.startswith("step ") for line in lines), "".join(lines)
    os.kill(_worker_pid(proc.pid, 1), signal.SIGTERM)
    try:
        rest = proc.stderr.read()
        code = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert "saved 'term'" in out, out[-3000:]
    assert out.count("stopped at step") == 1, out[-3000:]  # rank 0 reports, once
    assert "forcefully exiting" not in out and "Timeout" not in out  # nobody had to be killed
    assert code != 0  # rank 1 exits 143, so torchrun reports the run as stopped
    info = listed(env)
    assert [c["name"] for c in info] == ["term"] and info[0]["ok"]
    meta = info[0]["meta"]
    assert 0 < meta["steps"] < 100000 and not meta["complete"]
    assert sorted(p.name for p in (env_path(env) / "term" / "resume").iterdir() if p.name.startswith("rng_state")) == ["rng_state_0.pth", "rng_state_1.pth"]
    # and it resumes under torchrun from that step
    steps = meta["steps"]
    r = subprocess.run(torchrun(["train", "--resume", "term", "--max-steps", str(steps + 1)], env), env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"steps {steps}->{steps + 1}" in r.stderr
