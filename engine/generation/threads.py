"""CPU threads for decoding, without touching anyone else's.

A decode step is many tiny ops: splitting each over several cores buys nothing, and when the
cores are busy (training, other processes) waiting for the second thread made steps up to 10x
slower (bench/).  So a reply decodes on one intra-op thread.

``torch.set_num_threads`` does two things with ATen's OpenMP backend: it sets the calling
thread's OpenMP thread count, and it stores the count that every thread started later begins
with.  Left alone, a training run started while a reply streams would train on one core.  So
after limiting its own thread, the decoder puts the stored count back from a throwaway thread
(which changes only that thread's own count).  With the native or TBB pools the setting resizes
the whole process's pool; there the limit is left off: a slower decode beats a crippled run.
"""

from __future__ import annotations

import contextlib
import functools
import threading


def per_thread_setting(parallel_info: str) -> bool:
    """Whether a thread can have its own intra-op thread count, from
    ``torch.__config__.parallel_info()`` (OpenMP: yes; the native or TBB pools: no)."""
    return "ATen parallel backend: OpenMP" in parallel_info


@functools.lru_cache(maxsize=1)
def _per_thread() -> bool:
    import torch

    return per_thread_setting(torch.__config__.parallel_info())


def _set_default_for_new_threads(n: int) -> None:
    import torch

    helper = threading.Thread(target=torch.set_num_threads, args=(n,), name="minigpt-threads")
    helper.start()
    helper.join()


@contextlib.contextmanager
def one_decode_thread(device: str):
    """Run the body on one intra-op thread (CPU, where the setting can be per thread); every
    other thread, and threads started meanwhile, keep the process's count."""
    import torch

    before = torch.get_num_threads()  # also fixes this thread's own count before it is changed
    limit = device == "cpu" and before > 1 and _per_thread()
    if limit:
        torch.set_num_threads(1)
        _set_default_for_new_threads(before)
    try:
        yield
    finally:
        if limit:
            torch.set_num_threads(before)
