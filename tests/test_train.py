import threading
import time

import pytest

from engine import events as ev
from engine.store.checkpoints import CheckpointStore
from engine.errors import UsageError
from engine.training.config import DEFAULT_TOKENIZER, EVALS_PER_BUDGET, TrainConfig
from engine.training.job import TrainingJob


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
    assert started.tokenizer.startswith(f"{DEFAULT_TOKENIZER} (") and started.tokenizer.endswith(" tokens)")
    steps = log.of(ev.TrainStep)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert all(s.loss > 0 and s.tokens_per_s > 0 and s.lr > 0 for s in steps)
    assert all(s.grad_norm is not None and 0 < s.grad_norm < 1e3 for s in steps)  # the Trainer's, before clipping
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
    # Stop saves and goes: no evaluation or sample on the way out (none was due before step 100)
    assert not log.of(ev.TrainEval) and not log.of(ev.TrainSample)
    assert [c.step for c in log.of(ev.CheckpointSaved)] == [result.step]
    info = CheckpointStore().get("stopme")
    assert info.ok and info.resumable and info.meta["steps"] == result.step and not info.meta["complete"]

    # --resume continues from the save with the step count and optimizer state
    import torch

    state = torch.load(info.path / "resume" / "optimizer.pt", weights_only=True)
    assert state["state"]  # Adam moments were saved
    rates = sorted(g["initial_lr"] for g in state["param_groups"])
    assert len(rates) == 3 and rates[-1] == pytest.approx(5 * rates[0])  # the token embeddings at 5x the rate
    assert info.meta["embedding_lr_scale"] == 5.0 and info.meta["adam_beta2"] == 0.99
    other = TrainingJob(TrainConfig(resume="stopme", max_steps=result.step + 2, embedding_lr_scale=1.0)).run()
    assert isinstance(other, ev.TrainFailed) and "--embedding-lr-scale (5)" in other.error
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
    from engine.generation.chat_model import ChatModel

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
        ({"time_budget": -5.0}, "--time"),
        ({"arch": "rnn"}, "unknown architecture"),
        ({"optimizer": "sgd"}, "unknown optimizer"),
        ({"arch": "llama", "init": "gpt2"}, "--arch"),
        ({"warmdown": 1.5}, "--warmdown"),
        ({"weight_decay": -0.1}, "--weight-decay"),
        ({"adam_beta2": 1.0}, "--adam-beta2"),
        ({"embedding_lr_scale": 0}, "--embedding-lr-scale"),
        ({"activation": "tanh"}, "unknown activation"),
        ({"activation": "gelu", "init": "gpt2"}, "--activation"),
        ({"activation": "gelu", "arch": "llama"}, "GPT-2 family"),
        ({"sample_tokens": 0}, "--sample-tokens"),
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


def test_same_seed_same_first_20_losses(fresh_dirs):
    """--seed fixes the initial weights as well as the data order."""

    def losses(seed, name):
        log = ev.EventLog()
        result = TrainingJob(tiny(max_steps=20, eval_every=1000, tokenizer="bpe:512", seed=seed, name=name), log).run()
        assert isinstance(result, ev.TrainFinished), result
        return [s.loss for s in log.of(ev.TrainStep)]

    first = losses(7, "s1")
    assert len(first) == 20
    assert losses(7, "s2") == first
    assert losses(8, "s3")[0] != first[0]  # another seed: other initial weights, another first loss


def test_time_budget_ends_on_time_with_the_rate_decayed(fresh_dirs):
    log = ev.EventLog()
    budget = 20.0
    # a warmdown other than the default: the flag reaches the schedule
    result = TrainingJob(tiny(time_budget=budget, warmdown=0.6, tokenizer="bpe:512", name="timed"), log).run()
    assert isinstance(result, ev.TrainFinished), result
    started = log.of(ev.TrainStarted)[0]
    assert started.time_budget_s == budget
    steps = log.of(ev.TrainStep)
    assert len(steps) >= 3
    # training time (without evaluation, sampling and saving) ends within a step of the budget
    per_step = steps[-1].train_s / len(steps)
    assert abs(result.train_s - budget) <= max(2.0, 1.5 * per_step), (result.train_s, per_step)
    assert result.overhead_s > 0 and result.elapsed_s >= result.train_s + result.overhead_s * 0.9
    # warmup from ~0, the peak rate, then decayed by the end
    peak = max(s.lr for s in steps)
    assert peak == pytest.approx(3e-3, rel=0.05)
    assert steps[0].lr == 0.0 and steps[-1].lr < 0.5 * peak
    # each step's rate is the schedule's at the training time the step before ended
    from engine.training.schedule import budget_lr_factor

    for before, step in zip(steps, steps[1:]):
        assert step.lr == pytest.approx(peak * budget_lr_factor(before.train_s, budget, warmdown_fraction=0.6), rel=1e-6, abs=1e-12)
    # the ETA is the budget that remains, and it reaches 0 at the end
    assert steps[-1].eta_s <= max(2.0, 1.5 * per_step) and steps[0].eta_s == pytest.approx(budget - steps[0].train_s, abs=0.01)
    assert steps[-1].total_steps == steps[-1].step
    # without --eval-every: an evaluation (and a save) at the first step whose training time
    # reaches each fifth of the budget, and one at the last step
    fifth = budget / EVALS_PER_BUDGET
    due = [next(s.step for s in steps if s.train_s >= k * fifth) for k in range(1, EVALS_PER_BUDGET) if steps[-1].train_s >= k * fifth]
    assert len(set(due)) == EVALS_PER_BUDGET - 1, ("each fifth of the budget should end at its own step", due, per_step)
    assert [e.step for e in log.of(ev.TrainEval)] == due + [result.step]
    assert [e.step for e in log.of(ev.TrainSample)] == due + [result.step]
    assert [c.step for c in log.of(ev.CheckpointSaved)] == due + [result.step]
    # the checkpoint records the budget
    meta = CheckpointStore().get("timed").meta
    assert meta["time_budget_s"] == budget and meta["complete"] and meta["planned_steps"] is None
    assert meta["budget_used_s"] == pytest.approx(result.train_s, abs=0.05)
    # resuming a finished budget needs a new one
    again = TrainingJob(TrainConfig(resume="timed", eval_blocks=4, sample_tokens=8)).run()
    assert isinstance(again, ev.TrainFailed) and "--time" in again.error


def test_a_pause_does_not_spend_the_time_budget(fresh_dirs):
    """A timed run paused for ``hold`` seconds: the pause is wall time, not training time, so
    the training clock steps over it and the run trains its whole budget after it."""
    log = ev.EventLog()
    budget, hold = 3.0, 1.5
    # small batches: many short steps in the budget, even on a busy machine
    job = TrainingJob(tiny(time_budget=budget, eval_every=1000, batch_size=2, tokenizer="bpe:512", name="paused-budget"), log)
    job.start()
    deadline = time.time() + 120
    wait_for(lambda: log.of(ev.TrainStep), deadline, "a first step")
    job.pause()  # takes effect at the end of a later step
    wait_for(lambda: log.of(ev.TrainPaused), deadline, "the pause")
    paused_at = log.of(ev.TrainPaused)[0].step
    time.sleep(hold)  # the pause being measured (not a wait for anything)
    # nothing moves while paused (the paused step itself is reported after the pause)
    assert max(s.step for s in log.of(ev.TrainStep)) <= paused_at and not log.of(ev.TrainResumed)
    job.resume()
    result = job.join(120)
    assert isinstance(result, ev.TrainFinished), result
    assert [e.step for e in log.of(ev.TrainResumed)] == [paused_at]
    steps = {s.step: s for s in log.of(ev.TrainStep)}
    assert max(steps) > paused_at + 1, ("no training after the pause", paused_at, max(steps))
    # from the step before the pause to the step after it: wall time grew by the pause (at
    # least ``hold``) more than training time did
    before, after = steps[paused_at - 1], steps[paused_at + 1]
    wall, train = after.elapsed_s - before.elapsed_s, after.train_s - before.train_s
    assert wall - train >= hold - 0.05, (wall, train)
    # and the run still trained its whole budget
    per_step = steps[max(steps)].train_s / len(steps)
    assert abs(result.train_s - budget) <= max(1.0, 1.5 * per_step), (result.train_s, per_step)
    assert result.elapsed_s >= result.train_s + hold
    assert CheckpointStore().get("paused-budget").meta["budget_used_s"] == pytest.approx(result.train_s, abs=0.05)


@pytest.mark.parametrize("arch,optimizer", [("llama", "muon"), ("gpt2", "muon"), ("llama", "adamw")])
def test_llama_and_muon_train_save_and_generate(fresh_dirs, arch, optimizer):
    log = ev.EventLog()
    name = f"{arch}-{optimizer}"
    result = TrainingJob(tiny(max_steps=4, eval_every=4, tokenizer="bpe:512", arch=arch, optimizer=optimizer, name=name), log).run()
    assert isinstance(result, ev.TrainFinished), result
    losses = [s.loss for s in log.of(ev.TrainStep)]
    assert len(losses) == 4 and all(0 < x < 20 for x in losses) and losses[-1] < losses[0]
    started = log.of(ev.TrainStarted)[0]
    assert started.arch == arch and started.optimizer == optimizer
    meta = CheckpointStore().get(name).meta
    assert meta["arch"] == arch and meta["optimizer"] == optimizer

    import torch

    state = torch.load(CheckpointStore().path(name) / "resume" / "optimizer.pt", weights_only=True)
    kinds = [g.get("use_muon") for g in state["param_groups"]]
    assert (True in kinds) == (optimizer == "muon")

    from engine.events import GenerationFinished
    from engine.generation.chat_model import ChatModel
    from engine.store.settings import Sampling

    chat = ChatModel.from_checkpoint(name, device="cpu")
    assert chat.model.config.model_type == arch
    if arch == "llama":
        assert chat.model.config.tie_word_embeddings and chat.model.lm_head.weight is chat.model.model.embed_tokens.weight
        assert not any(n.endswith(".bias") for n, _ in chat.model.named_parameters())
    events = list(chat.stream("In the beginning", Sampling(max_new_tokens=6, seed=1), threading.Event()))
    finished = [e for e in events if isinstance(e, GenerationFinished)]
    assert finished and finished[0].new_tokens > 0


@pytest.mark.slow
def test_resume_continues_what_remains_of_the_budget(fresh_dirs):
    from engine.training.schedule import budget_lr_factor

    log = ev.EventLog()
    budget = 16.0
    job = TrainingJob(tiny(time_budget=budget, warmdown=0.9, eval_every=1000, tokenizer="bpe:512", name="halfway"), log)
    job.start()
    deadline = time.time() + 120
    while not any((s.train_s or 0) >= 4 for s in log.of(ev.TrainStep)) and time.time() < deadline:
        time.sleep(0.05)
    job.cancel(save=True)
    stopped = job.join(120)
    assert isinstance(stopped, ev.TrainCancelled) and stopped.saved
    meta = CheckpointStore().get("halfway").meta
    used = meta["budget_used_s"]
    assert 4 <= used < budget and not meta["complete"]

    log2 = ev.EventLog()
    result = TrainingJob(TrainConfig(resume="halfway", eval_blocks=4, sample_tokens=8), log2).run()
    assert isinstance(result, ev.TrainFinished), result
    assert log2.of(ev.TrainStarted)[0].time_budget_s == pytest.approx(budget - used)
    steps = log2.of(ev.TrainStep)
    assert steps[0].step == stopped.step + 1
    # the schedule goes on from where the clock stopped (no second warmup), with the run's own
    # warmdown: the rate set after the last step before the stop, at that step's training time
    # (unrounded; the checkpoint keeps ``used`` to 10 ms)
    def rate(at):
        return 3e-3 * budget_lr_factor(at, budget, warmdown_fraction=0.9)

    stopped_at = log.of(ev.TrainStep)[-1]
    assert stopped_at.step == stopped.step and stopped_at.train_s == pytest.approx(used, abs=0.005)
    assert steps[0].lr == pytest.approx(rate(stopped_at.train_s), rel=1e-6)
    assert rate(used) < 0.95 * 3e-3  # (the default warmdown would still be at the peak)
    meta = CheckpointStore().get("halfway").meta
    assert meta["complete"] and abs(meta["budget_used_s"] - budget) < 3


def test_default_name_follows_the_data_really_read(fresh_dirs):
    """Without --dataset the run reads WikiText-2, or offline (as here) the built-in corpus:
    the name says which.  An explicit dataset names itself."""
    from engine.data.sources import uses_builtin
    from engine.hub import hub_reachable
    from engine.training.plan import default_name

    assert not hub_reachable()
    for cfg, start in [(TrainConfig(), "seed-builtin-"), (TrainConfig(dataset="../data/wiki.train.tokens", preset="tiny"), "tiny-wiki-")]:
        assert default_name(cfg, uses_builtin(cfg.dataset)).startswith(start)


def test_first_run_config_is_the_defaults_on_conversations_for_a_time_budget():
    from engine.training.config import FIRST_RUN_BUDGET_S, first_run_config

    cpu, gpu = first_run_config(device="cpu"), first_run_config(device="cuda")
    assert (cpu.time_budget, gpu.time_budget) == (FIRST_RUN_BUDGET_S["cpu"], FIRST_RUN_BUDGET_S["cuda"]) and gpu.time_budget < cpu.time_budget
    assert cpu.max_steps is None and cpu.tokenizer_spec == DEFAULT_TOKENIZER
    assert cpu.dataset == gpu.dataset == "chitchat" and cpu.assistant == "both"  # a chat model (README, "Chat models")
    assert TrainConfig(init="gpt2").tokenizer_spec == "gpt2"  # fine-tuning keeps the model's own vocabulary
