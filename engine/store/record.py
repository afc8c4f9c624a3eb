"""A checkpoint's record: what ``minigpt.json`` says about the run that made it, typed.

The training callback writes one at each save (``CheckpointRecord.to_json``); the CLI, the
checkpoint picker, the app and the benchmark read it by attribute (``CheckpointInfo.record``).
A file from an older version, or one edited by hand, still reads: keys it lacks are ``None``
(or the field's default), keys this version does not know are kept in ``extra`` and written back,
and a value of the wrong type is dropped rather than trusted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FORMAT = 1


@dataclass(frozen=True)
class CheckpointRecord:
    # what it is
    name: str = ""
    preset: str | None = None
    arch: str | None = None
    params: int | None = None
    vocab_size: int | None = None
    n_positions: int | None = None
    block_size: int | None = None
    init: str | None = None  # the pretrained model it started from (--init)
    parent: str | None = None
    chat: bool = False  # has a chat template: replies are rendered turns
    # what it learned from
    dataset: str | None = None  # as shown: "wikitext (wikitext-2-raw-v1)", "chitchat", a file name
    dataset_spec: str | None = None  # as asked: the --dataset value that finds it again
    dataset_config: str | None = None
    assistant: str | None = None  # conversations: which speaker was the assistant ("both", "second")
    word_level: bool = False
    tokenizer: str | None = None
    tokenizer_spec: str | None = None
    # how far it got
    steps: int = 0
    planned_steps: int | None = None  # None: a time budget decides
    tokens_seen: int | None = None
    complete: bool = False
    time_budget_s: float | None = None
    budget_used_s: float | None = None
    train_time_s: float | None = None
    overhead_s: float | None = None
    wall_time_s: float | None = None
    # how good it is (the last evaluation; eval_step says when)
    train_loss: float | None = None
    val_loss: float | None = None
    perplexity: float | None = None
    bits_per_byte: float | None = None
    word_perplexity: float | None = None
    eot_rate: float | None = None
    ranking_top1: float | None = None
    eval_step: int | None = None
    # how it was trained (a resumed run continues with these)
    device: str | None = None
    dtype: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    optimizer: str | None = None
    warmdown: float | None = None  # None: the default
    weight_decay: float | None = None
    adam_beta2: float | None = None
    embedding_lr_scale: float | None = None
    created: str | None = None
    updated: str | None = None
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # keys from another version

    @classmethod
    def from_json(cls, data: dict) -> "CheckpointRecord":
        """Read a ``minigpt.json`` dict; never raises on its contents."""
        if not isinstance(data, dict):
            return cls()
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                value = _coerce(value, _kind(known[key]))
                if value is not None or known[key].default is None:
                    values[key] = value
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_json(self) -> dict:
        out = asdict(self)
        extra = out.pop("extra")
        return {**extra, **out}


def _kind(f) -> str:
    t = str(f.type)
    for kind in ("bool", "int", "float", "str"):
        if t.startswith(kind):
            return kind
    return "any"


def _coerce(value, kind: str):
    """``value`` as ``kind``, or None when it is not one (a hand-edited or foreign file)."""
    if value is None or kind == "any":
        return value
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "str":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value) if math.isfinite(value) else None
