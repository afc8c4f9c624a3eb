"""Decoding on one CPU thread must not change the thread count a training run uses."""

import threading

import torch

from engine.generation.threads import one_decode_thread, per_thread_setting


def test_only_openmp_makes_the_setting_per_thread():
    assert per_thread_setting("...\nATen parallel backend: OpenMP\n")
    assert not per_thread_setting("...\nATen parallel backend: native thread pool\n")
    assert not per_thread_setting("...\nATen parallel backend: TBB\n")


def test_training_started_while_a_reply_streams_keeps_its_threads():
    before = torch.get_num_threads()
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
    assert decoding.wait(30)
    trainer = threading.Thread(target=train)
    trainer.start()
    trainer.join(30)
    main_during = torch.get_num_threads()
    done.set()
    t.join(30)
    assert seen == [before, before] and main_during == before
    if before > 1 and per_thread_setting(torch.__config__.parallel_info()):
        assert inside == [1]  # the decode itself runs on one thread
    assert torch.get_num_threads() == before
