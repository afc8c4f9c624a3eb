"""The loss over hidden states, a slice of rows at a time, is the plain loss: same value,
same gradients (a real tiny GPT-2 and Llama)."""

import pytest
import torch

from engine.loss import causal_lm_loss, final_hidden_states, supports_hidden_state_loss
from engine.model import PRESETS, build_model


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_chunked_loss_matches_the_models_own_loss(arch):
    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"], 300, 32, 0, arch)
    assert supports_hidden_state_loss(model)
    ids = torch.randint(0, 300, (3, 32))
    labels = ids.clone()
    labels[0, :10] = -100  # masked positions (the overlapping last block) count for nothing

    plain = model(input_ids=ids, labels=labels).loss
    plain.backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    hidden = final_hidden_states(model, ids)
    chunked = causal_lm_loss(hidden, model.get_output_embeddings().weight, labels, rows=7)  # 7 rows a slice
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, plain_grads[name], atol=1e-6, rtol=1e-4), name


def test_summed_nats_and_a_given_divisor():
    torch.manual_seed(1)
    hidden = torch.randn(2, 9, 16)
    weight = torch.randn(50, 16)
    labels = torch.randint(0, 50, (2, 9))
    logits = hidden[:, :-1] @ weight.T
    nats = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), labels[:, 1:].reshape(-1), reduction="sum")
    assert causal_lm_loss(hidden, weight, labels, divisor=1, rows=5).item() == pytest.approx(nats.item(), rel=1e-5)
    assert causal_lm_loss(hidden, weight, labels, divisor=torch.tensor(40)).item() == pytest.approx(nats.item() / 40, rel=1e-5)
