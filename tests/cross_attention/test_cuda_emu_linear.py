"""The csrc/ gated residual linear kernel under the host emulation, through ``cuda.gated_linear_forward`` /
``gated_linear_backward`` (the contract of the Triton ``gated_linear_fwd`` / ``gated_linear_bwd``):
``x + g * (a @ Wᵀ + b)``, ``da = g * dy @ W`` and ``G = dyᵀ @ a`` (fp32) against PyTorch in fp64, with the
tolerance rule, fp32 / fp16 (wmma) / bf16, ragged sizes, strided inputs, and the bad-input messages."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.cross_attention import cuda
from fiber_kernels.cross_attention.reference import gated_residual_linear_reference
from fiber_kernels.testing.numerics import assert_close_to_reference

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16")]
ATOL = 1e-5


def _inputs(rows: int, in_features: int, out_features: int, bias: bool):
    x = torch.randn(rows, out_features)
    a = torch.randn(rows, in_features)
    weight = torch.randn(out_features, in_features) / in_features ** 0.5
    return x, a, weight, torch.randn(out_features) if bias else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,in_features,out_features,bias", [
    pytest.param(70, 40, 50, True, id="70x40x50-bias"),
    pytest.param(17, 96, 33, False, id="17x96x33"),
])
def test_forward_and_backward_match_torch(ops, rows, in_features, out_features, bias, dtype):
    x, a, weight, b = _inputs(rows, in_features, out_features, bias)
    alpha = torch.tensor([0.7])
    grad = torch.randn(rows, out_features)
    gate = alpha.clone()

    def cast(t, to):
        return None if t is None else t.to(to)

    out = cuda.gated_linear_forward(*(cast(t, dtype) for t in (x, a, weight, b)), gate, ops=ops)
    reference = gated_residual_linear_reference(*(cast(t, torch.float64) for t in (x, a, weight, b)), alpha.double())
    same_dtype = gated_residual_linear_reference(*(cast(t, dtype) for t in (x, a, weight, b)), alpha.to(dtype))
    assert out.dtype == dtype and out.shape == (rows, out_features)
    assert_close_to_reference(out, reference, same_dtype, factor=3.0, atol_floor=ATOL, name="cuda out")

    grad_a, outer = cuda.gated_linear_backward(grad.to(dtype), a.to(dtype), weight.to(dtype), gate, ops=ops)
    assert grad_a.dtype == dtype and outer.dtype == torch.float32 and outer.shape == weight.shape
    assert_close_to_reference(grad_a, 0.7 * grad.double() @ weight.double(), 0.7 * grad.to(dtype) @ weight.to(dtype),
                              factor=3.0, atol_floor=ATOL, name="cuda da")
    assert_close_to_reference(outer, grad.double().t() @ a.double(), grad.to(dtype).t() @ a.to(dtype),
                              factor=3.0, atol_floor=ATOL, name="cuda dyT a")


def test_strided_inputs(ops):
    """Transposed and sliced views are read through their strides (no hidden copies needed)."""
    x = torch.randn(50, 40).t()           # (40, 50), column-major
    a = torch.randn(40, 72)[:, ::2]       # (40, 36), stride 2
    weight = torch.randn(36, 50).t()      # (50, 36)
    b = torch.randn(100)[::2]
    gate = torch.tensor([-1.3])
    out = cuda.gated_linear_forward(x, a, weight, b, gate, ops=ops)
    expected = gated_residual_linear_reference(x.double(), a.double(), weight.double(), b.double(), gate.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn(50, 40).t()
    grad_a, outer = cuda.gated_linear_backward(grad, a, weight, gate, ops=ops)
    torch.testing.assert_close(grad_a.double(), -1.3 * grad.double() @ weight.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outer.double(), grad.double().t() @ a.double(), rtol=1e-5, atol=1e-5)


def test_zero_gate_returns_the_residual_exactly(ops):
    x, a, weight, b = _inputs(33, 16, 20, True)
    out = cuda.gated_linear_forward(x, a, weight, b, torch.zeros(1), ops=ops)
    assert torch.equal(out, x)


def _bad_forward_inputs():
    x, a, weight, b = _inputs(4, 3, 5, True)
    gate = torch.ones(1)
    return [
        pytest.param((x[0], a, weight, b, gate), ValueError, r"x must be 2-D \(M, O\)", id="x-rank"),
        pytest.param((x, a.half(), weight, b, gate), TypeError, "all tensors must have one dtype", id="mixed-dtype"),
        pytest.param((x, a[:3], weight, b, gate), ValueError, "must have the same M", id="rows"),
        pytest.param((x, a, weight.t(), b, gate), ValueError, r"weight must have shape \(O, I\)", id="weight-shape"),
        pytest.param((x, a, weight, b[:2], gate), ValueError, r"bias must have shape \(O,\)", id="bias-shape"),
        pytest.param((x, a, weight, b.half(), gate), TypeError, "bias must have dtype in", id="bias-dtype"),
        pytest.param((x, a, weight, b, gate.double()), TypeError, "gate must have dtype in", id="gate-dtype"),
        pytest.param((x, a, weight, b, torch.ones(2)), ValueError, "gate must have exactly one element",
                     id="gate-numel"),
        pytest.param((x, a, weight, b, gate.to("meta")), ValueError, "all tensors must be on one device",
                     id="gate-device"),
        pytest.param((x, a[:0], weight, b, gate), ValueError, "a must not be empty", id="empty"),
    ]


@pytest.mark.parametrize("args,error,message", _bad_forward_inputs())
def test_forward_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        cuda.gated_linear_forward(*args, ops=object())


def test_backward_rejects_bad_input():
    x, a, weight, _ = _inputs(4, 3, 5, False)
    with pytest.raises(ValueError, match=r"grad_out must be 2-D \(M, O\)"):
        cuda.gated_linear_backward(x[0], a, weight, torch.ones(1), ops=object())
    with pytest.raises(ValueError, match=r"weight must have shape \(O, I\)"):
        cuda.gated_linear_backward(x, a, weight[:2], torch.ones(1), ops=object())
