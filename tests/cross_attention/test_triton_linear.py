"""``gated_residual_linear`` (Triton under the interpreter, and the torch backend) against the eager
``x + g(alpha) * linear(a, W, b)``: output and the gradients of x, a, weight, bias and alpha."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from fiber_kernels.cross_attention import gated_residual_linear

from .conftest import assert_linear_matches_reference


def _inputs(lead: tuple[int, ...], out_features: int, in_features: int, alpha: float, bias: bool):
    x = torch.randn(*lead, out_features)
    a = torch.randn(*lead, in_features)
    weight = torch.randn(out_features, in_features) * in_features ** -0.5
    b = torch.randn(out_features) if bias else None
    return x, a, weight, b, torch.tensor([alpha])


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")])
@pytest.mark.parametrize("gate", ["identity", "tanh"])
@pytest.mark.parametrize("lead,out_features,in_features,alpha,bias", [
    pytest.param((2, 49), 64, 64, 0.3, True, id="windows-49x64"),
    pytest.param((3, 5), 48, 80, -1.2, True, id="ragged-5x48x80"),
    pytest.param((70,), 40, 24, 0.8, False, id="no-bias"),
])
def test_matches_reference(lead, out_features, in_features, alpha, bias, gate, dtype, backend):
    tensors = _inputs(lead, out_features, in_features, alpha, bias)
    grad = torch.randn(*lead, out_features)
    assert_linear_matches_reference(partial(gated_residual_linear, backend=backend), tensors, grad, gate, backend,
                                    dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("gate", ["identity", "tanh"])
def test_alpha_zero_returns_input_exactly_with_right_dalpha(gate, backend):
    x, a, weight, bias, alpha = _inputs((2, 49), 64, 32, 0.0, True)
    leaves = [t.requires_grad_() for t in (x, a, weight, bias, alpha)]
    out = gated_residual_linear(*leaves, gate, backend=backend)
    assert torch.equal(out, x)
    grad = torch.randn_like(out)
    out.backward(grad)
    projected = (a.detach() @ weight.detach().t() + bias.detach()).double()
    expected_dalpha = (grad.double() * projected).sum()  # g'(0) = 1 for both gates
    assert alpha.grad.item() == pytest.approx(expected_dalpha.item(), rel=1e-5, abs=1e-4)
    assert torch.equal(x.grad, grad)
    for leaf in (a, weight, bias):
        assert torch.equal(leaf.grad, torch.zeros_like(leaf))
