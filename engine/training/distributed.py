"""Several training processes (``torchrun --nproc_per_node=N``): who is who, and how they agree.

With one process every function here is a no-op that imports nothing.  With several, the
process group is set up through accelerate's ``PartialState`` (the same one the Trainer then
reuses), rank 0 decides what must be the same everywhere (the run's name), the main process
writes shared files first while the others wait (``main_process_first``), and a stop asked of
any one rank is seen by all of them at the same step (an all-reduce of the flags).
"""

from __future__ import annotations

import contextlib
import os


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def several() -> bool:
    return rank_and_world()[1] > 1


def _state(device: str | None = None):
    """accelerate's PartialState, set up (gloo on CPU, nccl on CUDA) on first use."""
    from accelerate import PartialState

    if device is None:
        return PartialState()
    cpu = device == "cpu"
    return PartialState(cpu=cpu, backend="gloo" if cpu else "nccl")


def setup(device: str) -> None:
    """Join the process group before anything the ranks must agree on."""
    if several():
        _state(device)


def agree(value):
    """Rank 0's ``value`` on every rank."""
    if not several():
        return value
    from accelerate.utils import broadcast_object_list

    _state()
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


@contextlib.contextmanager
def main_first():
    """The main process runs the body first (building shared files); the others wait, then run it."""
    if not several():
        yield
        return
    with _state().main_process_first():
        yield


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over all ranks (every rank must call this at the same point)."""
    if not several():
        return tuple(bool(f) for f in flags)
    import torch
    import torch.distributed as dist

    state = _state()
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=state.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def wait_for_everyone() -> None:
    if several():
        _state().wait_for_everyone()
