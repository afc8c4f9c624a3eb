"""Two training processes on CPU (``torchrun --nproc_per_node=2``, gloo): data parallel that trains
what one process trains, resume, one agreed run name, and SIGTERM to one rank (both ranks stop at
the same step; one consistent checkpoint)."""

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
    assert info[0]["meta"]["steps"] == 5
    assert info[0]["meta"]["tokens_seen"] == 5 * 8 * 64 * 2  # the metadata counts both ranks' rows
    assert not (env_path(env) / ".runs" / name).exists()  # the Trainer's work folder is gone after the run


DUMP = ROOT / "tests" / "rank_dump.py"


def test_two_ranks_train_exactly_what_one_process_trains(env, tmp_path):
    """Data parallel is the same training: 2 ranks x batch 4 end with identical weights (the
    checkpoint rank 0 saved holds them), equal to fp32 rounding to one process x batch 8 with the
    same seed, data and steps.  Each process writes down (tests/rank_dump.py) the rows it trained
    on and its weights; the step's two halves together are the one process's batch, row for row.
    fp32 throughout: on CPUs with native bf16 the default would be bf16."""
    import torch
    from safetensors.torch import load_file

    steps = 4
    args = ["train", "--dataset", "builtin", "--preset", "tiny", "--tokenizer", "bpe:400", "--dtype", "fp32",
            "--max-steps", str(steps), "--eval-every", "100", "--seed", "5"]
    dumps = {}
    for name, cmd, batch in (("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(DUMP)], 4),
                             ("one", [sys.executable, str(DUMP)], 8)):
        dump = tmp_path / f"dump-{name}"
        dump.mkdir()
        r = subprocess.run(cmd + args + ["--batch-size", str(batch), "--name", name], env={**env, "MINIGPT_TEST_DUMP": str(dump)},
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        dumps[name] = sorted(dump.iterdir())
    assert [p.name for p in dumps["two"]] == ["rank0.pt", "rank1.pt"] and [p.name for p in dumps["one"]] == ["rank0.pt"]
    rank0, rank1 = (torch.load(p) for p in dumps["two"])
    (one,) = (torch.load(p) for p in dumps["one"])

    # the data: each step, rank 0's 4 rows then rank 1's 4 rows are the one process's 8 rows
    assert len(rank0["batches"]) == len(rank1["batches"]) == len(one["batches"]) == steps
    for step, (a, b, whole) in enumerate(zip(rank0["batches"], rank1["batches"], one["batches"]), 1):
        assert a.shape == b.shape == (4, 64) and whole.shape == (8, 64)
        assert not torch.equal(a, b), f"step {step}: both ranks trained on the same rows"
        assert torch.equal(torch.cat([a, b]), whole), f"step {step}: the ranks' rows are not the one process's batch"
    meta = {c["name"]: c["meta"] for c in listed(env)}
    assert meta["two"]["tokens_seen"] == sum(b.numel() for b in rank0["batches"] + rank1["batches"])
    assert meta["one"]["tokens_seen"] == sum(b.numel() for b in one["batches"])

    # the weights: the ranks agree exactly, the saved checkpoint is theirs, one process agrees to fp32 rounding
    final = rank0["weights"]
    assert final.keys() == rank1["weights"].keys() == one["weights"].keys()
    for key in final:
        assert torch.equal(final[key], rank1["weights"][key]), f"{key}: the ranks ended with different weights"
    saved = load_file(env_path(env) / "two" / "model.safetensors")
    assert saved and all(torch.equal(saved[key], final[key]) for key in saved), "the checkpoint is not what the ranks had"
    for key in final:
        torch.testing.assert_close(final[key], one["weights"][key], rtol=1e-4, atol=5e-5, msg=lambda m, key=key: f"{key}: 2 ranks vs 1 process: {m}")
    # and training moved the weights far more than that tolerance (the comparison is not of two untrained models)
    moved = max((final[k] - rank0["initial"][k]).abs().max().item() for k in final)
    assert moved > 100 * 5e-5, f"the weights moved by at most {moved}"
    assert all(torch.equal(one["initial"][k], rank0["initial"][k]) for k in final)  # one seed, one starting point


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
