"""Faults: kill -9, disk full, two writers, damaged files.  Real processes, files and signals."""

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT, minigpt_cmd, skip_unless_ci
from engine.store.checkpoints import CheckpointStore
from engine.events import GenerationFinished, TrainFailed, TrainFinished
from engine.store.settings import Sampling, Settings, load_settings, save_settings
from engine.training.config import TrainConfig
from engine.training.job import TrainingJob


def _env(tmp_path, data_dir=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_DATA_HOME"] = str(data_dir or tmp_path / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


def _verify_store(root):
    """Every listed checkpoint is good, loads and generates; no leftovers of crashed writers."""
    from engine.generation.chat_model import ChatModel

    store = CheckpointStore(root)
    infos = store.list()
    for info in infos:
        assert info.ok, (info.name, info.broken)
        chat = ChatModel.from_checkpoint(info.name, store=store, device="cpu")
        assert isinstance(list(chat.stream("And", Sampling(max_new_tokens=3, seed=0)))[-1], GenerationFinished)
    leftovers = [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-", ".trash-"))] if root.exists() else []
    assert leftovers == []
    return infos


@pytest.mark.slow
def test_kill_9_twenty_times_loses_nothing(tmp_path):
    env = _env(tmp_path)
    root = tmp_path / "data" / "minigpt-tui" / "checkpoints"
    rng = random.Random(1234)
    last_steps = 0
    survived = 0
    for i in range(20):
        args = ["train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "100000", "--save-every", "1", "--eval-every", "1000"]
        args += ["--resume", "k"] if (root / "k").exists() else ["--name", "k"]
        proc = subprocess.Popen(minigpt_cmd() + args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # wait until it trains (imports take seconds), then kill at a random moment: mid-step or mid-save
        started = time.time()
        training = False
        for line in proc.stderr:
            if line.startswith(("step ", "saved ")):
                training = True
                break
            if time.time() - started > 120:
                break
        assert training, f"round {i}: the run never reached a training step (exit {proc.poll()})"
        time.sleep(rng.uniform(0.0, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
        # a survival is a run that was still training when the kill landed, after which the store checks out
        killed = proc.returncode == -signal.SIGKILL
        infos = _verify_store(root)
        survived += killed
        if infos:
            assert [c.name for c in infos] == ["k"]
            steps = infos[0].meta["steps"]
            assert steps >= last_steps  # never goes back: the last good save survives
            assert infos[0].resumable
            last_steps = steps
    assert survived == 20 and last_steps > 0
    # --resume continues from the last good save with its step count
    r = subprocess.run(minigpt_cmd() + ["train", "--resume", "k", "--max-steps", str(last_steps + 2)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"steps {last_steps}->{last_steps + 2}" in r.stderr
    assert CheckpointStore(root).get("k").meta["steps"] == last_steps + 2


# The checkpoint writer (transformers' ``safe_save_file``, the model's weights: the first big file
# a save writes) watched from inside the training process.  ``_SPY_SAVES`` only records the free
# space of the target's file system when the write began, and the error it ended with, then
# re-raises: the real write and the real error.  (safetensors writes into a hidden temporary file
# that it unlinks when the write fails, so the bytes it got down cannot be counted afterwards; a
# write that starts with 0 < free < size bytes free and ends with ENOSPC has filled the disk
# part-way.)  ``_INJECT_ENOSPC`` makes the injected case: the write fails with ENOSPC before its
# first byte, as a full disk fails at open().
_SPY_SAVES = """
import json, os
import transformers.modeling_utils as modeling_utils

_real_save = modeling_utils.safe_save_file

def _watched_save(*args, **kwargs):
    target = str(args[1] if len(args) > 1 else kwargs.get("filename"))
    disk = os.statvfs(os.path.dirname(target))
    free = disk.f_bavail * disk.f_frsize
    try:
        return _real_save(*args, **kwargs)
    except BaseException as exc:
        with open(os.environ["MINIGPT_TEST_SAVE_LOG"], "a") as log:
            log.write(json.dumps({"file": target, "free_before": free, "error": str(exc)}) + "\\n")
        raise
"""

_INJECT_ENOSPC = """
import errno

def _disk_full(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

_real_save = lambda tensors, filename, *args, **kwargs: _disk_full(filename)
"""

_INSTALL = """
modeling_utils.safe_save_file = _watched_save
"""


@pytest.fixture(params=["real-tmpfs", "injected"])
def small_disk(request, tmp_path):
    """(folder, case).  ``real-tmpfs``: a 120 MB tmpfs for the data dir, filled before the save so
    that the save's write runs out of space part-way (where mounting is not allowed this case is
    skipped, and under CI it fails).  ``injected``: a plain folder, and the save's write fails
    with ENOSPC before any byte is written."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if request.param == "injected":
        yield mnt, request.param
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        skip_unless_ci(f"cannot mount a tmpfs for a real full disk: {' '.join((r.stderr or r.stdout).split())}")
    try:
        yield mnt, request.param
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def _files(folder):
    """Every file under ``folder`` (hidden ones too), by relative path, with its SHA-256."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path, small_disk, record_property):
    small_disk, case = small_disk
    record_property("disk_full", case)
    env = _env(tmp_path, data_dir=small_disk)
    base = ["train", "--dataset", "builtin", "--preset", "tiny", "--eval-every", "100"]
    r = subprocess.run(minigpt_cmd() + base + ["--max-steps", "2", "--name", "full"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    root = small_disk / "minigpt-tui" / "checkpoints"
    before = CheckpointStore(root).get("full").meta["steps"]
    saved = _files(root / "full")
    model_size = (root / "full" / "model.safetensors").stat().st_size
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(_SPY_SAVES + (_INJECT_ENOSPC if case == "injected" else "") + _INSTALL)
    env["PYTHONPATH"] = f"{spy}{os.pathsep}{env['PYTHONPATH']}"
    env["MINIGPT_TEST_SAVE_LOG"] = str(tmp_path / "saves.jsonl")
    if case == "real-tmpfs":
        # fill the disk, leaving room to stage the resume (a copy of the optimizer state; the
        # weights are hard links) and half the weights: the next save runs out of space mid-file
        staging = sum(f.stat().st_size for f in (root / "full" / "resume").iterdir())
        free = shutil.disk_usage(small_disk).free
        with open(small_disk / "filler", "wb") as f:
            f.write(b"\0" * (free - staging - model_size // 2))
    r = subprocess.run(minigpt_cmd() + ["train", "--resume", "full", "--max-steps", "4"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("minigpt-tui:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], r.stderr
    assert "could not save checkpoint 'full'" in errors[0] and "the previous save is intact" in errors[0], errors
    assert "Traceback" not in r.stderr
    # the path that ran: a real write that filled the disk part-way, or one refused before its first byte
    failed = [json.loads(line) for line in (tmp_path / "saves.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and "No space left on device" in failed[0]["error"], failed
    assert failed[0]["file"].endswith("model.safetensors"), failed
    free = failed[0]["free_before"]
    if case == "real-tmpfs":
        assert 0 < free < model_size, f"not a partial write: {free} bytes free for {model_size} bytes of weights"
    else:
        assert free > model_size, f"injected: the disk had room ({free} bytes free), the error is the injected one"
    said = f"disk full ({case}): the weights' write ({model_size} bytes) began with {free} bytes free and failed with ENOSPC"
    record_property("disk_full_write", said)
    print(said)
    # before anything lists (and so tidies) the store: the earlier checkpoint is byte for byte
    # the same, and nothing else is left in the store (no partial weights, no staging folders)
    assert _files(root / "full") == saved, "the earlier checkpoint changed on disk"
    left = sorted(p for p in _files(root) if not p.startswith("full/") and not p.startswith(".locks/"))
    assert left == [], f"left in the store after the failed save: {left}"
    if case == "real-tmpfs":
        (small_disk / "filler").unlink()
    infos = _verify_store(root)
    assert [i.name for i in infos] == ["full"] and infos[0].meta["steps"] == before


def test_two_writers_of_one_checkpoint(tmp_path, fresh_dirs):
    """The second process gets a clear message and the first run's checkpoint is intact."""
    env = _env(tmp_path)
    env["XDG_DATA_HOME"] = os.environ["XDG_DATA_HOME"]
    first = subprocess.Popen(
        minigpt_cmd() + ["train", "--dataset", "builtin", "--preset", "tiny", "--max-steps", "100000", "--save-every", "2", "--name", "shared"],
        env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in first.stderr:
            if line.startswith("saved 'shared'"):
                break
        result = TrainingJob(TrainConfig(resume="shared", max_steps=100_001)).run()
        assert isinstance(result, TrainFailed)
        assert f"being written by another process (pid {first.pid})" in result.error
        # a reader can list and load while the writer writes
        assert CheckpointStore().get("shared").ok
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(120)
    assert first.returncode == 130
    assert CheckpointStore().get("shared").ok


def test_failed_runs_write_nothing_to_the_store(fresh_dirs, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00garbage" * 10)
    for config in (TrainConfig(dataset=str(bad), preset="tiny", name="nope1"), TrainConfig(dataset=str(tmp_path / "missing"), preset="tiny", name="nope2"),
                   TrainConfig(dataset="wikitext", preset="tiny", name="nope3")):
        result = TrainingJob(config).run()
        assert isinstance(result, TrainFailed) and "\n" not in result.error
    assert CheckpointStore().list() == []


@pytest.mark.parametrize("content", [b"{not json", b"\x00\xff\xfe", b"[1, 2, 3]", b'{"sampling": {"temperature": -4}}', b'{"active_checkpoint": 7}', b""])
def test_damaged_settings_start_with_defaults_and_are_kept(fresh_dirs, content):
    from engine.store import paths

    path = paths.settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    notes = []
    settings = load_settings(notify=notes.append)
    assert settings == Settings()
    kept = [p for p in path.parent.iterdir() if p.name.startswith("settings.json.bad-")]
    assert len(kept) == 1 and kept[0].read_bytes() == content
    assert notes and "defaults" in notes[0]
    save_settings(Settings(active_checkpoint="x", sampling=Sampling(temperature=0.5)))
    assert load_settings() == Settings(active_checkpoint="x", sampling=Sampling(temperature=0.5))
