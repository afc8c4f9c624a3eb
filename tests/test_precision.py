"""Precision choice: bf16 only where the hardware runs it natively, fp16 + a scaler on older GPUs."""

import pytest

from engine.model import autocast, build_model, cuda_dtype, get_preset, to_inference_dtype
from engine.training.config import TrainConfig


@pytest.mark.parametrize(
    "capability,expected",
    [((6, 0), "fp16"), ((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((8, 6), "bf16"), ((9, 0), "bf16"), ((10, 0), "bf16")],
)
def test_cuda_dtype_by_compute_capability(capability, expected):
    # V100 (7.0) and T4 (7.5) report is_bf16_supported() but only emulate it
    assert cuda_dtype(capability) == expected


def test_fp16_is_a_valid_training_precision():
    TrainConfig(dtype="fp16").check()
    TrainConfig(dtype="bf16").check()


def test_cpu_chat_keeps_fp32_weights():
    import torch

    model = build_model(get_preset("tiny"), 300, 64, 0)
    assert to_inference_dtype(model, "cpu") == "fp32"
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_fp16_autocast_is_half_precision():
    import torch

    with autocast("cpu", "fp16"):
        out = torch.ones(4, 4) @ torch.ones(4, 4)
    assert out.dtype == torch.float16
