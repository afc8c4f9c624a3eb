"""The headless command line, run as a real subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, minigpt_cmd


def run(args, env, timeout=300, **kw):
    return subprocess.run(minigpt_cmd() + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


@pytest.fixture
def env(cli_env, tmp_path):
    cli_env = dict(cli_env)
    cli_env["XDG_DATA_HOME"] = str(tmp_path / "data")
    cli_env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return cli_env


@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
def test_train_list_generate_eval(env):
    r = run(["train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "4", "--eval-every", "2", "--name", "t1"], env)
    assert r.returncode == 0, r.stderr
    out = r.stderr
    assert "training 't1'" in out and "eval @ 2" in out and "saved 't1' at step 4" in out and "done:" in out
    assert "\r" not in out  # not a terminal: plain lines, no progress bar
    assert "Traceback" not in out

    r = run(["checkpoints", "list", "--json"], env)
    listed = json.loads(r.stdout)
    assert [c["name"] for c in listed] == ["t1"] and listed[0]["ok"]
    meta = listed[0]["meta"]
    assert meta["steps"] == 4 and meta["bits_per_byte"] > 0 and meta["preset"] == "tiny"

    r = run(["checkpoints", "list"], env)
    assert "t1" in r.stdout and "tiny" in r.stdout

    r = run(["generate", "--checkpoint", "t1", "--prompt", "And God said", "--max-new-tokens", "12", "--seed", "1"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and not r.stdout.startswith("And God said")

    r = run(["eval", "--checkpoint", "t1"], env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["split"] == "validation" and result["bits_per_byte"] > 0 and result["tokens"] > 1000

    # the chat's first reply is the continuation of the first line (same sampling, same seed)
    sampling = ["--max-new-tokens", "6", "--seed", "2", "--temperature", "1.0"]
    first = run(["generate", "--checkpoint", "t1", "--prompt", "Hello there", *sampling], env)
    assert first.returncode == 0, first.stderr
    first_reply = first.stdout[:-1]
    assert first_reply.strip(), "generate gave an empty reply"
    r = run(["chat", "--plain", "--checkpoint", "t1", *sampling], env, input="Hello there\nAnd again\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(first_reply + "\n"), (r.stdout, first_reply)
    second_reply = r.stdout[len(first_reply) + 1 :]
    assert second_reply.endswith("\n") and second_reply[:-1].strip(), r.stdout  # a second, non-empty reply

    r = run(["checkpoints", "rename", "t1", "t2"], env)
    assert r.returncode == 0
    r = run(["checkpoints", "show", "t2"], env)
    assert json.loads(r.stdout)["meta"]["name"] == "t2"
    r = run(["checkpoints", "rm", "t2"], env)
    assert r.returncode == 0
    assert json.loads(run(["checkpoints", "list", "--json"], env).stdout) == []


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["train", "--max-steps", "-3"], 2, "--max-steps"),
        (["train", "--batch-size", "0"], 2, "--batch-size"),
        (["train", "--lr", "0"], 2, "--lr"),
        (["train", "--preset", "enormous"], 2, "invalid choice"),
        (["train", "--dataset", "/no/such/file.txt", "--preset", "tiny"], 2, "not found"),
        (["train", "--dataset", "wikitext", "--preset", "tiny"], 1, "builtin"),
        (["train", "--name", "../evil", "--preset", "tiny"], 2, "invalid checkpoint name"),
        (["generate", "--checkpoint", "nope", "--prompt", "x"], 1, "no checkpoint named 'nope'"),
        (["generate", "--checkpoint", "../../etc", "--prompt", "x"], 2, "invalid checkpoint name"),
        (["generate", "--checkpoint", "x", "--prompt", "y", "--top-p", "0"], 2, "--top-p"),
        (["checkpoints", "rm", "ghost"], 1, "no checkpoint named"),
        (["bogus"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line_with_exit_codes(fresh_dirs, capsys, args, code, needle):
    from engine.cli import main

    try:
        returned = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        returned = exc.code
    err = capsys.readouterr().err
    assert returned == code, (returned, err)
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_usage_error_from_the_installed_command(env):
    r = run(["train", "--max-steps", "0"], env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--max-steps" in r.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
def test_signal_saves_then_exits(env, sig, code):
    proc = subprocess.Popen(
        minigpt_cmd() + ["train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "500", "--eval-every", "400", "--name", "sig"],
        env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    deadline = time.time() + 180
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("step ") or time.time() > deadline:
            break
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(120) == code, "".join(lines) + rest
    assert "saved 'sig'" in rest and "Traceback" not in rest
    listed = json.loads(run(["checkpoints", "list", "--json"], env).stdout)
    assert listed[0]["name"] == "sig" and listed[0]["ok"]
    steps = listed[0]["meta"]["steps"]
    r = run(["train", "--resume", "sig", "--max-steps", str(steps + 1)], env)
    assert r.returncode == 0, r.stderr
    assert f"steps {steps}->{steps + 1}" in r.stderr


@pytest.mark.slow
def test_done_means_command(env):
    r = run(["train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "30", "--name", "t1"], env, timeout=600)
    assert r.returncode == 0, r.stderr
    listed = json.loads(run(["checkpoints", "list", "--json"], env).stdout)
    assert listed[0]["meta"]["steps"] == 30 and listed[0]["meta"]["val_loss"] < 9
    r = run(["generate", "--checkpoint", "t1", "--prompt", "And God said"], env)
    assert r.returncode == 0 and len(r.stdout.split()) > 5


@pytest.mark.slow
def test_torchrun_two_processes_data_parallel(env):
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "tui",
         "train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "6", "--eval-every", "3", "--name", "ddp"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes" in r.stderr
    assert r.stderr.count("training 'ddp'") == 1  # only rank 0 reports
    listed = json.loads(run(["checkpoints", "list", "--json"], env).stdout)
    assert [c["name"] for c in listed] == ["ddp"] and listed[0]["ok"]
    assert listed[0]["meta"]["tokens_seen"] == 6 * 8 * 64 * 2  # both ranks' batches counted
