"""Model presets, construction, and the device/precision choice."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError
from engine.hub import hub_reachable


@dataclass(frozen=True)
class Preset:
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    block_size: int
    batch_size: int
    lr: float
    description: str
    arch: str = "gpt2"  # the model family; --arch picks the other one at the same shape


ARCHES = ("gpt2", "llama")
# The GPT-2 family's MLP activation for a new model: squared ReLU (So et al. 2021, as in
# modded-nanogpt) learned more per step than tanh-GELU at the seed shape (README, "Defaults").
GPT2_ACTIVATIONS = {"relu2": "relu2", "gelu": "gelu_pytorch_tanh"}  # flag value -> transformers' name
GPT2_ACTIVATION = "relu2"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", 64, 2, 2, 64, 8, 3e-3, "2 layers x 64 wide: for tests, trains in seconds"),
        # batch and rate: the sweep's winners for this shape (bench/results/2026-12-01-sweep-2m*.json)
        Preset("seed", 128, 6, 8, 128, 8, 2e-3, "the tutorial's GPT2Config(n_embd=128, n_layer=6, n_head=8), block 128"),
        Preset("small", 384, 6, 6, 256, 16, 6e-4, "6 layers x 384 wide, block 256"),
        Preset("gpt2", 768, 12, 12, 1024, 8, 6e-4, "GPT-2 small (124M), block 1024"),
    )
}


def quiet_transformers() -> None:
    """No progress bars or warnings from transformers/datasets: the engine reports through events."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}") from None


def llama_intermediate_size(n_embd: int) -> int:
    """SwiGLU width with the parameters of GPT-2's 4x MLP (3 matrices of 8/3 x width), rounded up to 32."""
    return -(-(8 * n_embd // 3) // 32) * 32


def build_model(preset: Preset, vocab_size: int, block_size: int, eos_id: int, arch: str | None = None,
                activation: str | None = None):
    """A fresh model of the preset's shape: GPT-2 (``GPT2LMHeadModel``) or a Llama-style one
    (``LlamaForCausalLM``: rotary positions, RMSNorm, SwiGLU, tied embeddings, no biases).
    Dropout is off: these models see each token a few times at most, so it only costs speed.
    GPT-2's activation (``activation``, a key of ``GPT2_ACTIVATIONS``) is squared ReLU by default;
    ``gelu`` is PyTorch's fused tanh-GELU (``gelu_pytorch_tanh``): the function of GPT-2's
    ``gelu_new`` in one kernel instead of seven ops (a ``seed`` step 1.09x faster, AVX2)."""
    arch = arch or preset.arch
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=preset.n_embd,
            intermediate_size=llama_intermediate_size(preset.n_embd),
            num_hidden_layers=preset.n_layer,
            num_attention_heads=preset.n_head,
            num_key_value_heads=preset.n_head,
            max_position_embeddings=block_size,
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
        )
        return LlamaForCausalLM(config)
    if arch != "gpt2":
        raise UsageError(f"unknown architecture '{arch}': use {' or '.join(ARCHES)}")
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_embd=preset.n_embd,
        n_layer=preset.n_layer,
        n_head=preset.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function=GPT2_ACTIVATIONS[activation or GPT2_ACTIVATION],
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"
    return model


def load_pretrained(model_id: str):
    """A pretrained causal LM to fine-tune (``--init``): safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM

    local = Path(model_id).expanduser()
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(local) if local.is_dir() else model_id,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=local.is_dir() or not hub_reachable(),
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model '{model_id}' to start from: {str(exc).splitlines()[0]}") from None


def n_positions(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run 2-5x faster than fp32 on such CPUs (see bench/)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cuda_dtype(capability: tuple[int, int]) -> str:
    """The half precision for a CUDA card of this compute capability: bf16 from 8.0 (Ampere and
    later run it natively); fp16 before that (with a gradient scaler in training).  On T4/V100
    ``torch.cuda.is_bf16_supported()`` says yes too, but there bf16 is emulated and slow."""
    return "bf16" if tuple(capability)[0] >= 8 else "fp16"


def to_inference_dtype(model, device: str) -> str:
    """Cast a model for chatting: half precision on CUDA (bf16 or fp16, as ``cuda_dtype``), fp32
    weights on CPU.  Returns the dtype name to autocast with."""
    if device != "cuda":
        return "fp32"
    import torch

    dtype = cuda_dtype(torch.cuda.get_device_capability())
    model.to(torch.bfloat16 if dtype == "bf16" else torch.float16)
    return dtype


def pick_device(requested: str = "auto") -> tuple[str, str]:
    """(device, dtype) for training and generation: on CUDA bf16 or fp16 (``cuda_dtype``); on CPU
    'bf16' where it is faster (AVX512-BF16/AMX), else 'fp32'."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device '{requested}': use auto, cpu or cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here")
    device = "cuda" if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda":
        return device, cuda_dtype(torch.cuda.get_device_capability())
    return device, "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: str, dtype: str):
    import contextlib

    import torch

    if dtype == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if dtype == "fp16":
        return torch.autocast(device_type=device, dtype=torch.float16)
    return contextlib.nullcontext()
