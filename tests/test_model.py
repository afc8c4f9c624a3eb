"""The models the engine builds."""

import torch

from engine.model import PRESETS, build_model


def test_gpt2_uses_the_fused_gelu_with_gpt2s_values():
    """New GPT-2 models use PyTorch's fused tanh-GELU: the same function as GPT-2's gelu_new
    (same logits and gradients to float precision), in one kernel."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    fused = build_model(PRESETS["tiny"], 300, 32, 0)
    assert fused.config.activation_function == "gelu_pytorch_tanh"
    config = fused.config.to_dict() | {"activation_function": "gelu_new"}
    classic = GPT2LMHeadModel(type(fused.config).from_dict(config))
    classic.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 300, (2, 32))
    a, b = fused(input_ids=ids, labels=ids), classic(input_ids=ids, labels=ids)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    a.loss.backward()
    b.loss.backward()
    grads = dict(classic.named_parameters())
    for name, p in fused.named_parameters():
        assert torch.allclose(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4), name
