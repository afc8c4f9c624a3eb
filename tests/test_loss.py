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


def test_no_gradient_work_without_grad_mode(monkeypatch):
    """Evaluation (no_grad / inference_mode) computes the loss only: no gradient products."""
    import torch

    from engine import loss as loss_mod

    torch.manual_seed(0)
    hidden, weight = torch.randn(40, 8, requires_grad=True), torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 50, (40,))
    calls = []
    real_empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: calls.append(1) or real_empty_like(*a, **k))
    with torch.inference_mode():
        value = loss_mod.linear_cross_entropy(hidden, weight, targets, rows=16)
    assert calls == []  # no gradient buffer was made
    expected = torch.nn.functional.cross_entropy(hidden.detach() @ weight.detach().T, targets)
    assert torch.allclose(value, expected, atol=1e-5)


def test_low_precision_hidden_states_against_a_full_precision_head():
    """bf16 hidden states (autocast) with an fp32 head: loss and gradients in fp32, close to the
    fp32 computation, over several slices."""
    torch.manual_seed(2)
    hidden = torch.randn(30, 16)
    weight = torch.randn(60, 16, requires_grad=True)
    targets = torch.randint(0, 60, (30,))
    targets[:4] = -100
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets)
    expected.backward()
    expected_grad = weight.grad.clone()
    weight.grad = None

    low = hidden.to(torch.bfloat16).requires_grad_()
    from engine.loss import linear_cross_entropy

    value = linear_cross_entropy(low, weight, targets, rows=8)
    value.backward()
    assert value.dtype == torch.float32 and weight.grad.dtype == torch.float32 and low.grad.dtype == torch.bfloat16
    assert value.item() == pytest.approx(expected.item(), rel=2e-2)
    assert torch.allclose(weight.grad, expected_grad, atol=2e-2, rtol=5e-2)


def test_targets_far_below_the_best_logit_keep_an_exact_loss():
    """-log p(target) comes from the softmax; where p underflows to 0 in fp32 (a logit ~87+
    nats below its row's best) the loss is taken from the logits instead, never inf."""
    from engine.loss import linear_cross_entropy

    torch.manual_seed(2)
    hidden = (torch.randn(20, 8) * 40).requires_grad_()
    weight = (torch.randn(50, 8) * 3).requires_grad_()
    logits = hidden.detach() @ weight.detach().T
    targets = logits.argmin(dim=1)  # the least likely token of each row
    gaps = logits.max(dim=1).values - logits.min(dim=1).values
    assert int((gaps > 110).sum()) >= 5  # these rows underflow in a softmax
    targets[3] = -100  # a masked row counts for nothing, whatever its logits
    value = linear_cross_entropy(hidden, weight, targets, rows=6)
    value.backward()

    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(h.double() @ w.double().T, targets)
    expected.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(hidden.grad, h.grad.float(), atol=1e-5, rtol=1e-4)
    assert torch.allclose(weight.grad, w.grad.float(), atol=1e-5, rtol=1e-4)
