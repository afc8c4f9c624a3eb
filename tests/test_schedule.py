"""Time budgets: duration parsing, the clock that leaves evaluation out, the schedule's shape,
and how --resume continues a budget."""

import pytest

from engine.errors import UsageError
from engine.training.schedule import TrainClock, budget_lr_factor, parse_duration
from engine.training.config import TrainConfig
from engine.store.record import CheckpointRecord
from engine.training.plan import plan_run


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), (" 45 sec ", 45), ("3min", 180)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "abc", "10x", "0s", "m", "5m later", "-3m"])
def test_bad_durations_are_one_line_usage_errors(text):
    with pytest.raises(UsageError) as err:
        parse_duration(text)
    assert "\n" not in str(err.value) and "--time" in str(err.value)


def test_bare_number_hints_at_units():
    with pytest.raises(UsageError, match="30m or 30s"):
        parse_duration("30")


def test_schedule_warms_up_holds_and_decays_on_the_clock():
    budget = 100.0
    assert budget_lr_factor(0.0, budget) == 0.0
    assert budget_lr_factor(2.5, budget) == pytest.approx(0.5)  # warmup: the first 5%
    assert budget_lr_factor(5.0, budget) == 1.0
    assert budget_lr_factor(70.0, budget) == 1.0  # stable until the last 30%
    assert budget_lr_factor(85.0, budget) == pytest.approx(0.5)
    assert budget_lr_factor(100.0, budget) == 0.0
    assert budget_lr_factor(130.0, budget) == 0.0


def test_clock_leaves_out_excluded_time():
    now = [0.0]
    clock = TrainClock(offset=10.0, now=lambda: now[0])
    assert clock.train_s() == 10.0
    clock.start()
    now[0] = 5.0
    with clock.excluded():
        now[0] = 8.0
        assert clock.train_s() == 15.0  # time inside the block does not count, even while in it
    with clock.excluded("pause"):
        now[0] = 20.0
    now[0] = 21.0
    assert clock.train_s() == 10.0 + 21.0 - 3.0 - 12.0
    assert clock.overhead_s == 3.0 and clock.paused_s == 12.0
    assert clock.marked_s == 10.0
    assert clock.mark() == clock.marked_s == 16.0


def _resume(meta, **kw):
    plan = plan_run(TrainConfig(resume="r", **kw), "r", CheckpointRecord.from_json(meta))
    return plan.config, plan.budget_offset_s


def test_resume_continues_the_budget_that_remains_or_takes_a_new_one():
    meta = {"time_budget_s": 180.0, "budget_used_s": 60.0, "planned_steps": None}
    cfg, offset = _resume(meta)
    assert cfg.time_budget == 180.0 and offset == 60.0  # the schedule goes on from 1m of 3m
    cfg, offset = _resume(meta, time_budget=30.0)
    assert cfg.time_budget == 30.0 and offset == 0.0  # a new budget
    cfg, offset = _resume(meta, max_steps=500)
    assert cfg.time_budget is None and offset == 0.0  # --max-steps: a step-count run
    with pytest.raises(UsageError, match="used its 3m00s time budget"):
        _resume({"time_budget_s": 180.0, "budget_used_s": 180.0})
    cfg, offset = _resume({"planned_steps": 40})  # a run without a budget is unchanged
    assert cfg.time_budget is None


def test_cli_time_flag(capsys):
    from engine.cli import main, train_config

    assert train_config(["--time", "1h30m"]).time_budget == 5400
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--time", "30"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--time" in err and "30m or 30s" in err
