"""``python tests/rank_dump.py train …`` (also as torchrun's script): the real ``minigpt-tui``
command, with each process writing down what it trained on and what it ended with, for
tests/test_multiprocess.py.  Into ``$MINIGPT_TEST_DUMP/rank<RANK>.pt``: the rows of every batch
the process's loss was computed on (step by step), and its model's weights before and after
training.
Nothing in the run is changed: the Trainer's own methods are wrapped, called and their results
returned as they are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.training import trainer as trainer_mod  # noqa: E402

_batches: list[torch.Tensor] = []
_real_compute_loss = trainer_mod.MiniTrainer.compute_loss
_real_train = trainer_mod.MiniTrainer.train


def _compute_loss(self, model, inputs, *args, **kwargs):
    if model.training:
        _batches.append(inputs["input_ids"].detach().cpu().clone())
    return _real_compute_loss(self, model, inputs, *args, **kwargs)


def _weights(trainer) -> dict[str, torch.Tensor]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _train(self, *args, **kwargs):
    initial = _weights(self)
    result = _real_train(self, *args, **kwargs)
    out = Path(os.environ["MINIGPT_TEST_DUMP"]) / f"rank{os.environ.get('RANK', '0')}.pt"
    torch.save({"batches": _batches, "initial": initial, "weights": _weights(self)}, out)
    return result


trainer_mod.MiniTrainer.compute_loss = _compute_loss
trainer_mod.MiniTrainer.train = _train

if __name__ == "__main__":
    from tui.__main__ import main

    main(sys.argv[1:])
