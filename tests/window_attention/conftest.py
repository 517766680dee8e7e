"""Scaffolding shared by the window-attention tests: the comparison of a backend's output and gradients with
the eager Swin reference, and the emulation binding (cases and input builders live in ``_cases.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fiber_kernels.testing import emu
from fiber_kernels.testing.numerics import assert_close_to_reference
from fiber_kernels.window_attention import window_attention_reference

from ._cases import Case, make_inputs

GRAD_NAMES = ("output", "dqkv", "drpb_table", "dqkv_bias")

# kernel(qkv, table, bias, grad_out) -> (out, dqkv, drpb_table, dqkv_bias or None)
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor], tuple]


def with_autograd(fn: Callable[..., torch.Tensor]) -> Kernel:
    """The kernel of a differentiable ``fn(qkv, table, bias) -> out``: out and the gradients of qkv, the table
    and the bias (None without one) by autograd, on fresh leaves of the given inputs."""
    def kernel(qkv, table, bias, grad_out):
        leaves = [t.detach().requires_grad_() if t is not None else None for t in (qkv, table, bias)]
        out = fn(*leaves)
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out.to(out.dtype))
        return (out, *grads) if bias is not None else (out, *grads, None)

    return kernel


def assert_matches_reference(case: Case, dtype: torch.dtype, kernel: Kernel) -> None:
    """``kernel`` on the inputs of ``case`` in ``dtype`` against the fp64 reference, by the tolerance rule of
    ``testing.numerics`` (the reference in ``dtype`` sets the scale of the error): output, dqkv, drpb_table and,
    with a bias, dqkv_bias; each in ``dtype`` with the reference's shape."""
    qkv, table, bias = make_inputs(case, dtype)
    grad_out = torch.randn(case.B, case.H, case.W, case.heads * case.head_dim)
    wide = (lambda t: None if t is None else t.to(torch.float64))
    reference = with_autograd(lambda q, t, b: window_attention_reference(
        q, t, case.heads, case.window, case.shift, case.head_dim ** -0.5, b, -100.0, case.shift_first))
    ref = reference(wide(qkv), wide(table), wide(bias), grad_out)
    same = reference(qkv, table, bias, grad_out)
    got = kernel(qkv, table, bias, grad_out)
    assert (got[3] is None) == (not case.bias)
    for name, value, ref_value, torch_value in zip(GRAD_NAMES, got, ref, same, strict=True):
        if ref_value is None:  # no qkv bias
            continue
        assert value.dtype == dtype and value.shape == ref_value.shape, name
        assert_close_to_reference(value, ref_value, torch_value, factor=3.0, atol_floor=1e-5, name=f"{case} {name}")


@pytest.fixture(scope="session")
def ops() -> emu.EmuModule:
    """The test binding of csrc/window_attention/window_attention_emu.cpp (built once, then cached)."""
    return emu.build("window_attention", ["csrc/window_attention/window_attention_emu.cpp"])
