"""A run resolved once (engine.training.plan) and the checkpoint's typed record
(engine.store.record): defaults, resume rules and the schedule, without training anything."""

from __future__ import annotations

import json

import pytest

from engine.errors import UsageError
from engine.model import get_preset
from engine.store.record import CheckpointRecord
from engine.training.config import DEFAULT_TOKENIZER, EMBEDDING_LR_SCALE, UNCAPPED_STEPS, TrainConfig
from engine.training.plan import default_name, plan_run


def test_a_new_run_fills_in_the_defaults():
    plan = plan_run(TrainConfig(preset="tiny"), "n")
    assert not plan.resuming and plan.start_step == 0 and plan.budget_offset_s == 0.0
    assert plan.tokenizer_spec == DEFAULT_TOKENIZER and plan.config.embedding_lr_scale == EMBEDDING_LR_SCALE
    tuned = plan_run(TrainConfig(init="gpt2"), "t")
    assert tuned.tokenizer_spec == "gpt2" and tuned.config.embedding_lr_scale == 1.0


def test_the_schedule_follows_steps_epochs_or_the_clock():
    tiny = get_preset("tiny")
    s = plan_run(TrainConfig(preset="tiny", epochs=2), "e").schedule(train_rows=10 * tiny.batch_size + 1)
    assert (s.steps_per_epoch, s.total_steps, s.capped) == (11, 22, True)
    assert s.eval_every == 10 and s.save_every == 10 and s.warmup_steps == 1 and s.lr == tiny.lr
    s = plan_run(TrainConfig(preset="tiny", time_budget=60.0), "t").schedule(train_rows=1000)
    assert s.total_steps == UNCAPPED_STEPS and not s.capped and s.timed_evals  # the clock ends it, and evaluates
    s = plan_run(TrainConfig(preset="tiny", time_budget=60.0, eval_every=7, batch_size=4, grad_accum=2), "t").schedule(100, world_size=2)
    assert not s.timed_evals and s.eval_every == 7 and s.rows_per_step == 16 and s.steps_per_epoch == 7


def _record(**kw) -> CheckpointRecord:
    base = dict(name="r", preset="tiny", dataset_spec="builtin", block_size=64, batch_size=8, lr=1e-3, steps=40,
                planned_steps=100, optimizer="muon", embedding_lr_scale=5.0, tokenizer_spec="bpe:512", assistant="second")
    return CheckpointRecord(**{**base, **kw})


def test_a_resumed_run_continues_with_its_own_choices():
    plan = plan_run(TrainConfig(resume="r", preset="small", batch_size=4), "r", _record())
    cfg = plan.config
    assert plan.resuming and plan.start_step == 40 and plan.tokenizer_spec == "bpe:512"
    assert (cfg.dataset, cfg.preset, cfg.block_size, cfg.optimizer, cfg.embedding_lr_scale, cfg.assistant) == (
        "builtin", "tiny", 64, "muon", 5.0, "second")
    assert (cfg.batch_size, cfg.lr, cfg.max_steps) == (4, 1e-3, 100)  # what is given again wins
    with pytest.raises(UsageError, match="already at step 40") as err:
        plan_run(TrainConfig(resume="r", max_steps=40), "r", _record()).schedule(1000)
    assert err.value.field == "max_steps"


@pytest.mark.parametrize("kw, field, needle", [
    (dict(optimizer="adamw"), None, None),  # adamw is the flag's default: the run keeps muon
    (dict(embedding_lr_scale=2.0), "embedding_lr_scale", "own --embedding-lr-scale"),
])
def test_resume_refuses_what_the_saved_state_cannot_take(kw, field, needle):
    if needle is None:
        assert plan_run(TrainConfig(resume="r", **kw), "r", _record()).config.optimizer == "muon"
        return
    with pytest.raises(UsageError, match=needle) as err:
        plan_run(TrainConfig(resume="r", **kw), "r", _record())
    assert err.value.field == field


def test_resume_without_a_record_is_refused():
    with pytest.raises(UsageError) as err:
        plan_run(TrainConfig(resume="r"), "r", None)
    assert err.value.field == "resume"


@pytest.mark.parametrize("kw, field", [
    (dict(lr=-1.0), "lr"), (dict(lr=5.0), "lr"), (dict(time_budget=-3.0), "time_budget"), (dict(max_steps=0), "max_steps"),
    (dict(block_size=4), "block_size"), (dict(tokenizer="bpe:x"), "tokenizer"), (dict(name="../x"), "name"),
    (dict(preset="huge"), "preset"), (dict(arch="rnn"), "arch"), (dict(resume="a", name="b"), "name"),
    (dict(warmdown=2.0), "warmdown"), (dict(seed=-1), "seed"),
])
def test_usage_errors_carry_the_field_they_are_about(kw, field):
    with pytest.raises(UsageError) as err:
        TrainConfig(**kw).check()
    assert err.value.field == field, str(err.value)


def test_default_names_say_preset_data_and_time():
    from datetime import datetime

    when = datetime(2026, 12, 7, 18, 5, 1)
    assert default_name(TrainConfig(preset="tiny"), uses_builtin=False, now=when) == "tiny-wikitext-20261207-180501"
    assert default_name(TrainConfig(dataset="/x/my talk.jsonl"), uses_builtin=False, now=when) == "seed-my-talk-20261207-180501"
    assert default_name(TrainConfig(), uses_builtin=True, now=when).startswith("seed-builtin-")


def test_the_record_reads_old_and_foreign_files_and_keeps_what_it_does_not_know():
    raw = {"name": "x", "steps": 12, "val_loss": 3.5, "params": "many", "chat": "yes", "lr": float("nan"),
           "future_key": [1, 2], "word_level": True}
    record = CheckpointRecord.from_json(raw)
    assert (record.name, record.steps, record.val_loss, record.word_level) == ("x", 12, 3.5, True)
    assert record.params is None and record.chat is False and record.lr is None  # wrong types are dropped
    assert record.eot_rate is None and record.planned_steps is None  # keys an older version did not write
    assert record.to_json()["future_key"] == [1, 2]  # written back as found
    again = CheckpointRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert CheckpointRecord.from_json(["not", "a", "dict"]) == CheckpointRecord()
