"""The models the engine builds."""

import torch

from engine.model import PRESETS, build_model


def test_gpt2_uses_the_fused_gelu_with_gpt2s_values():
    """New GPT-2 models use PyTorch's fused tanh-GELU: the same function as GPT-2's gelu_new
    (same logits and gradients to float precision), in one kernel."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    fused = build_model(PRESETS["tiny"], 300, 32, 0, activation="gelu")
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


def test_new_gpt2_models_use_squared_relu_and_load_as_plain_transformers_models(tmp_path):
    """The default activation is transformers' own ``relu2``: a saved model loads back with
    ``AutoModelForCausalLM`` and computes relu(x)**2 in its MLP."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"], 300, 32, 0)
    assert model.config.activation_function == "relu2"
    x = torch.randn(3, 5)
    assert torch.equal(model.transformer.h[0].mlp.act(x), torch.relu(x) ** 2)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 300, (1, 16))
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_optimizer_groups_give_the_embeddings_their_own_rate():
    """Each parameter in exactly one group; the token embeddings (the tied head too) at
    ``embedding_lr_scale`` x the rate; norms and biases without decay; Muon only for hidden matrices."""
    from engine.training.optim import param_groups

    model = build_model(PRESETS["tiny"], 300, 32, 0)
    decay = {n for n, p in model.named_parameters() if p.ndim == 2}
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb
    for muon in (False, True):
        groups = param_groups(model, decay, 0.1, 2e-3, 5.0, muon)
        ids = [id(p) for g in groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
        (emb_group,) = [g for g in groups if any(p is emb for p in g["params"])]
        assert emb_group["params"] == [emb] and emb_group["lr"] == 5 * 2e-3 and emb_group["weight_decay"] == 0.1
        assert all("lr" not in g for g in groups if g is not emb_group)
        for g in groups:
            assert g["weight_decay"] == (0.1 if all(p.ndim == 2 for p in g["params"]) else 0.0)
            assert ("use_muon" in g) == muon and (not muon or g["use_muon"] == (g is groups[0]))
    plain = param_groups(model, decay, 0.1, 2e-3, 1.0)
    assert len(plain) == 2 and all("lr" not in g for g in plain)  # the Trainer's own two groups
