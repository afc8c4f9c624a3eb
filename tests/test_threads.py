"""Decoding on one CPU thread must not change the thread count a training run uses."""

import threading

import torch

from engine.generation.threads import one_decode_thread, per_thread_setting


def test_only_openmp_makes_the_setting_per_thread():
    assert per_thread_setting("...\nATen parallel backend: OpenMP\n")
    assert not per_thread_setting("...\nATen parallel backend: native thread pool\n")
    assert not per_thread_setting("...\nATen parallel backend: TBB\n")


def test_training_started_while_a_reply_streams_keeps_its_threads():
    # two threads at least, so that the decode's one thread differs from everyone else's count
    # (restored at the end; set here, not read from the machine, so the check never depends on it)
    original = torch.get_num_threads()
    torch.set_num_threads(max(2, original))
    try:
        before = torch.get_num_threads()
        inside, seen, main_during = _decode_while_a_new_thread_trains()
        assert seen == [before, before] and main_during == before
        assert torch.get_num_threads() == before
        if per_thread_setting(torch.__config__.parallel_info()):
            # OpenMP: the decode itself runs on one thread, no one else's count changes
            assert inside == [1]
        else:
            # the native or TBB pools: the setting would resize the whole pool, so it is left alone
            assert inside == [before]
    finally:
        torch.set_num_threads(original)


def _decode_while_a_new_thread_trains() -> tuple[list[int], list[int], int]:
    """(the decode's thread count, the training thread's before and after a matmul, the main
    thread's while both ran)."""
    decoding, done = threading.Event(), threading.Event()
    inside: list[int] = []

    def decode():
        with one_decode_thread("cpu"):
            inside.append(torch.get_num_threads())
            decoding.set()
            done.wait(30)

    seen: list[int] = []

    def train():  # a new thread, like the training worker, started mid-reply
        seen.append(torch.get_num_threads())
        torch.randn(256, 256) @ torch.randn(256, 256)
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=decode)
    t.start()
    assert decoding.wait(30), "the decode thread never started"
    trainer = threading.Thread(target=train)
    trainer.start()
    trainer.join(30)
    main_during = torch.get_num_threads()
    done.set()
    t.join(30)
    return inside, seen, main_during


def test_where_the_setting_is_process_wide_the_decode_leaves_it_alone(monkeypatch):
    """The branch a native-pool or TBB build takes, on this build: the build's answer (the parsed
    parallel_info, tested above) says no per-thread setting, so the decode keeps every count."""
    from engine.generation import threads

    monkeypatch.setattr(threads, "_per_thread", lambda: False)
    original = torch.get_num_threads()
    torch.set_num_threads(max(2, original))
    try:
        before = torch.get_num_threads()
        inside, seen, main_during = _decode_while_a_new_thread_trains()
        assert inside == [before] and seen == [before, before] and main_during == before
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(original)
