"""Shared fixtures: every test session gets its own platformdirs tree (XDG variables) and runs
offline; one tiny checkpoint is trained once per session for tests that need a real model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = bool(os.environ.get("CI"))  # .ci/run sets it; so do hosted CI services


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose prerequisite is missing on a developer machine; in CI the same gap is a
    failure, so that a green CI run never hides a test that did not run."""
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(tmp_path_factory):
    """Relocate data, config and cache dirs for the whole session (the engine reads them lazily)."""
    base = tmp_path_factory.mktemp("xdg")
    env = {
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "XDG_CACHE_HOME": str(base / "cache"),
        "MINIGPT_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # The app decodes replies in a child process by default; its own tests turn it on
        # (tests/test_decode_process.py), the others decode on a thread as the CLI does.
        "MINIGPT_DECODE_PROCESS": "0",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def fresh_dirs(tmp_path, monkeypatch):
    """Per-test data/config dirs (the cache stays shared so tokenized data is reused)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_checkpoint(isolated_dirs):
    """Name of a real tiny GPT-2 trained for a few steps on the built-in corpus."""
    from engine.events import TrainFinished
    from engine.training.config import TrainConfig
    from engine.training.job import TrainingJob

    result = TrainingJob(
        TrainConfig(dataset="builtin", preset="tiny", max_steps=8, eval_every=8, name="tiny-fixture", eval_blocks=8)
    ).run()
    assert isinstance(result, TrainFinished), result
    return "tiny-fixture"


@pytest.fixture(scope="session")
def other_tiny_checkpoint(isolated_dirs):
    """Name of a second real tiny GPT-2: as ``tiny_checkpoint`` but another seed (other initial
    weights, other data order), so that two checkpoints really differ."""
    from engine.events import TrainFinished
    from engine.training.job import TrainConfig, TrainingJob

    result = TrainingJob(
        TrainConfig(dataset="builtin", preset="tiny", max_steps=8, eval_every=8, name="tiny-other-fixture", eval_blocks=8, seed=7)
    ).run()
    assert isinstance(result, TrainFinished), result
    return "tiny-other-fixture"


@pytest.fixture(scope="session")
def tiny_chat_checkpoint(isolated_dirs):
    """Name of a real tiny chat model: a few steps on the chitchat conversations."""
    from engine.events import TrainFinished
    from engine.training.config import TrainConfig
    from engine.training.job import TrainingJob

    result = TrainingJob(
        TrainConfig(dataset="chitchat", preset="tiny", tokenizer="bpe:2048", max_steps=40, eval_every=40, name="tiny-chat-fixture", eval_blocks=8)
    ).run()
    assert isinstance(result, TrainFinished), result
    return "tiny-chat-fixture"


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tiny_checkpoint):
    """Folder of the session's tiny checkpoint (stays valid when a test relocates the data dir)."""
    from engine.store.checkpoints import CheckpointStore

    return CheckpointStore().path(tiny_checkpoint)


@pytest.fixture
def cli_env(isolated_dirs):
    """Environment for running the installed command in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def minigpt_cmd() -> list[str]:
    return [sys.executable, "-m", "tui"]
