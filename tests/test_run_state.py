"""RunState.apply: the training screen's state from engine events, without Textual."""

from __future__ import annotations

from engine import events as ev
from tui.state.run_state import RunState, fmt_s


def test_a_run_seen_through_its_events():
    state = RunState(status="starting")
    started = ev.TrainStarted("r1", "tiny", "builtin", "gpt2", 1_230_000, "cpu", "fp32", 10, 512, 9_000, 900)
    assert state.apply(started).startswith("training 'r1': tiny, 1.23M params on builtin")
    assert state.status == "running" and state.name == "r1" and state.started is started
    step = ev.TrainStep(3, 10, 4.5, 1e-3, 900.0, 1536, 2.0, 5.0, 0.2, grad_norm=0.75)
    assert state.apply(step) is None and state.step is step
    state.record_step(ev.TrainStep(1, 10, 5.0, 1e-3, 900.0, 512, 1.0, 9.0, 0.1))  # (from the worker)
    state.record_step(step)
    assert state.apply(ev.TrainEval(3, 4.25, 70.1, 2.5)) == "eval @ 3: val loss 4.2500, perplexity 70.1, bits/byte 2.5000"
    assert state.val_points == [(1536, 4.25)]  # tokens seen at step 3
    assert state.grad_norm_history() == [0.75]  # the first step reported none
    assert state.history() == [(1, 512, 5.0, 1e-3), (3, 1536, 4.5, 1e-3)]
    assert state.apply(ev.TrainSample(3, "And", " God")) is None and state.sample.text == " God"
    assert state.apply(ev.TrainSample(5, "And", " light")) is None and [s.step for s in state.samples] == [3, 5]
    assert state.apply(ev.TrainPaused(4)) == "paused at step 4" and state.status == "paused"
    assert state.apply(ev.TrainResumed(4)) == "resumed at step 4" and state.status == "running"
    assert state.apply(ev.CheckpointSaved("r1", 5, "/x")) == "saved 'r1' at step 5" and state.saved.step == 5
    state.status = "stopping"
    assert state.apply(ev.TrainPaused(6)) == "paused at step 6" and state.status == "stopping"  # a stop wins
    assert state.apply(ev.TrainCancelled("r1", 6, True)) == "stopped at step 6 (saved)"
    assert state.status == "stopped" and not state.running
    assert state.log == [
        state.log[0],
        "eval @ 3: val loss 4.2500, perplexity 70.1, bits/byte 2.5000",
        "paused at step 4",
        "resumed at step 4",
        "saved 'r1' at step 5",
        "paused at step 6",
        "stopped at step 6 (saved)",
    ]


def test_a_timed_run_and_word_perplexity():
    state = RunState(status="starting")
    started = ev.TrainStarted("t", "seed", "wiki", "bpe:8192", 2_000_000, "cpu", "fp32", 0, 2048, 9, 9, time_budget_s=180.0)
    assert state.apply(started).endswith("cpu/fp32, for 3m00s of training")
    assert state.apply(ev.TrainEval(5, 5.0, 148.4, 2.1, word_perplexity=310.2)).endswith("bits/byte 2.1000, word perplexity 310.2")


def test_finished_and_failed_runs():
    done = RunState(status="running")
    assert done.apply(ev.TrainFinished("r2", 10, 3.0, 3.1, 1.9, 125.0)) == "finished 'r2' at step 10 in 2m05s"
    assert done.status == "finished" and not done.running
    failed = RunState(status="running")
    assert failed.apply(ev.TrainFailed("dataset missing")) == "failed: dataset missing"
    assert failed.status == "failed" and failed.error == "dataset missing"


def test_fmt_s():
    assert [fmt_s(None), fmt_s(-3), fmt_s(45), fmt_s(187), fmt_s(3900)] == ["-", "0s", "45s", "3m07s", "1h05m"]
