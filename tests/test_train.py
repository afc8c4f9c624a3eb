import threading
import time

import pytest

from engine import events as ev
from engine.checkpoints import CheckpointStore
from engine.errors import UsageError
from engine.train import TrainConfig, TrainingJob


def wait_for(condition, deadline: float, what: str) -> None:
    """Poll until ``condition()``; a timeout is a failure, never a silent fall-through."""
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def tiny(**kw):
    base = dict(dataset="builtin", preset="tiny", eval_blocks=4, sample_tokens=8)
    base.update(kw)
    return TrainConfig(**base)


def test_run_reports_typed_events_and_saves(fresh_dirs):
    log = ev.EventLog()
    result = TrainingJob(tiny(max_steps=6, eval_every=3, name="events"), log).run()
    assert isinstance(result, ev.TrainFinished) and result.step == 6
    kinds = [type(e) for e in log.events]
    assert kinds[0] in (ev.Notice, ev.TrainStarted)
    started = log.of(ev.TrainStarted)[0]
    assert started.total_steps == 6 and started.params > 0 and started.tokens_per_step == 8 * 64
    steps = log.of(ev.TrainStep)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert all(s.loss > 0 and s.tokens_per_s > 0 and s.lr > 0 for s in steps)
    assert steps[-1].tokens_seen == 6 * 8 * 64 and steps[-1].eta_s == 0
    evals = log.of(ev.TrainEval)
    assert [e.step for e in evals] == [3, 6]
    assert all(e.bits_per_byte > 0 and e.perplexity > 1 for e in evals)
    assert [s.step for s in log.of(ev.TrainSample)] == [3, 6]
    assert [c.step for c in log.of(ev.CheckpointSaved)] == [3, 6]
    assert kinds[-1] is ev.TrainFinished
    meta = CheckpointStore().get("events").meta
    assert meta["steps"] == 6 and meta["complete"] and meta["val_loss"] == pytest.approx(evals[-1].val_loss)
    assert not (CheckpointStore().root / ".runs" / "events").exists()


def test_worker_thread_cancel_within_one_step_and_resume(fresh_dirs):
    log = ev.EventLog()
    job = TrainingJob(tiny(max_steps=200, eval_every=100, save_every=100, name="stopme"), log)
    job.start()
    deadline = time.time() + 120
    wait_for(lambda: any(s.step >= 3 for s in log.of(ev.TrainStep)), deadline, "step 3")
    job.pause()
    wait_for(lambda: log.of(ev.TrainPaused), deadline, "the pause")
    paused_at = log.of(ev.TrainPaused)[0].step
    time.sleep(1.0)
    assert max(s.step for s in log.of(ev.TrainStep)) <= paused_at  # nothing moves while paused
    assert job.running and not log.of(ev.TrainResumed)
    job.resume()
    wait_for(lambda: any(s.step > paused_at for s in log.of(ev.TrainStep)), deadline, "a step after resuming")
    assert [e.step for e in log.of(ev.TrainResumed)] == [paused_at]
    job.cancel(save=True)
    stopped_at = max(s.step for s in log.of(ev.TrainStep))
    result = job.join(120)
    assert isinstance(result, ev.TrainCancelled) and result.saved
    assert result.step <= stopped_at + 1
    info = CheckpointStore().get("stopme")
    assert info.ok and info.resumable and info.meta["steps"] == result.step and not info.meta["complete"]

    # --resume continues from the save with the step count and optimizer state
    import torch

    state = torch.load(info.path / "resume" / "optimizer.pt", weights_only=True)
    assert state["state"]  # Adam moments were saved
    log2 = ev.EventLog()
    resumed = TrainingJob(TrainConfig(resume="stopme", max_steps=result.step + 2, eval_blocks=4, sample_tokens=8), log2).run()
    assert isinstance(resumed, ev.TrainFinished), resumed
    assert log2.of(ev.TrainStarted)[0].start_step == result.step
    assert [s.step for s in log2.of(ev.TrainStep)] == [result.step + 1, result.step + 2]
    meta = CheckpointStore().get("stopme").meta
    assert meta["steps"] == result.step + 2 and meta["tokens_seen"] == (result.step + 2) * 8 * 64


def test_trained_bpe_tokenizer_is_saved_with_the_checkpoint(fresh_dirs):
    result = TrainingJob(tiny(max_steps=2, tokenizer="bpe:512", name="bpe")).run()
    assert isinstance(result, ev.TrainFinished), result
    from engine.generate import ChatModel

    chat = ChatModel.from_checkpoint("bpe", device="cpu")
    assert len(chat.tokenizer) == 512 and chat.model.config.vocab_size == 512
    assert CheckpointStore().get("bpe").meta["tokenizer_spec"] == "bpe:512"


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"max_steps": -1}, "--max-steps"),
        ({"batch_size": 0}, "--batch-size"),
        ({"lr": 0}, "--lr"),
        ({"lr": -0.1}, "--lr"),
        ({"block_size": 100_000}, "--block-size"),
        ({"preset": "huge"}, "unknown preset"),
        ({"name": "../x"}, "invalid checkpoint name"),
        ({"tokenizer": "bpe:x"}, "bpe:N"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_config_is_a_usage_error(kwargs, needle):
    with pytest.raises(UsageError) as err:
        tiny(**kwargs).check()
    assert needle in str(err.value)


def test_existing_name_and_oversized_block_fail_cleanly(fresh_dirs, tiny_checkpoint_dir):
    import shutil

    CheckpointStore().root.mkdir(parents=True)
    shutil.copytree(tiny_checkpoint_dir, CheckpointStore().path("taken"))
    result = TrainingJob(tiny(max_steps=1, name="taken")).run()
    assert isinstance(result, ev.TrainFailed) and result.exit_code == 2 and "--resume taken" in result.error
    result = TrainingJob(tiny(max_steps=1, init=str(tiny_checkpoint_dir), block_size=128, name="toolong")).run()
    assert isinstance(result, ev.TrainFailed) and "64 positions" in result.error
    assert not CheckpointStore().path("toolong").exists()


def test_fine_tune_from_init_model(fresh_dirs, tiny_checkpoint_dir):
    result = TrainingJob(tiny(max_steps=2, init=str(tiny_checkpoint_dir), name="tuned")).run()
    assert isinstance(result, ev.TrainFinished), result
    meta = CheckpointStore().get("tuned").meta
    assert meta["parent"] == str(tiny_checkpoint_dir) and meta["steps"] == 2


def test_cancel_before_training_starts(fresh_dirs):
    job = TrainingJob(tiny(max_steps=5, name="early"))
    job.stop.set()
    result = job.run()
    assert isinstance(result, ev.TrainCancelled) and not result.saved
    assert not CheckpointStore().path("early").exists()


def test_os_errors_say_what_failed_not_a_save(fresh_dirs, tmp_path, monkeypatch, tiny_checkpoint_dir):
    """A cache that cannot be written is reported as such, not as a failed checkpoint save."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    # GPT-2's offline tokenizer is laid out in the cache first
    result = TrainingJob(tiny(max_steps=1, name="nocache1")).run()
    assert isinstance(result, ev.TrainFailed), result
    assert result.error.startswith("loading the tokenizer failed: Not a directory"), result.error
    assert str(blocker) in result.error and "save" not in result.error
    # a tokenizer from a folder: now the packed dataset is the first thing written to the cache
    result = TrainingJob(tiny(max_steps=1, name="nocache2", tokenizer=str(tiny_checkpoint_dir))).run()
    assert isinstance(result, ev.TrainFailed), result
    assert result.error.startswith("tokenizing the dataset (into the cache) failed: Not a directory"), result.error
    assert "save" not in result.error
    assert CheckpointStore().list() == []
