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


def reference_grads(case: Case, qkv: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None,
                    grad_out: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, ...]:
    """The eager reference's output and the gradients of qkv, the table and (with one) the bias, in the
    inputs' dtype (``scale`` defaults to ``head_dim ** -0.5``)."""
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (qkv, table, bias)]
    scale = case.head_dim ** -0.5 if scale is None else scale
    out = window_attention_reference(leaves[0], leaves[1], case.heads, case.window, case.shift, scale, leaves[2],
                                     -100.0, case.shift_first)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out.to(out.dtype))
    return (out, *grads)


def assert_matches_reference(case: Case, dtype: torch.dtype, kernel: Kernel) -> None:
    """``kernel`` on the inputs of ``case`` in ``dtype`` against the fp64 reference, by the tolerance rule of
    ``testing.numerics`` (the reference in ``dtype`` sets the scale of the error): output, dqkv, drpb_table and,
    with a bias, dqkv_bias; each in ``dtype`` with the reference's shape."""
    qkv, table, bias = make_inputs(case, dtype)
    grad_out = torch.randn(case.B, case.H, case.W, case.heads * case.head_dim)
    wide = (lambda t: None if t is None else t.to(torch.float64))
    ref = reference_grads(case, wide(qkv), wide(table), wide(bias), grad_out)
    same = reference_grads(case, qkv, table, bias, grad_out)
    got = kernel(qkv, table, bias, grad_out)
    assert (got[3] is None) == (not case.bias)
    for name, value, ref_value, torch_value in zip(GRAD_NAMES, got, ref, same, strict=False):
        assert value.dtype == dtype and value.shape == ref_value.shape, name
        assert_close_to_reference(value, ref_value, torch_value, factor=3.0, atol_floor=1e-5, name=f"{case} {name}")


@pytest.fixture(scope="session")
def ops() -> emu.EmuModule:
    """The test binding of csrc/window_attention/window_attention_emu.cpp (built once, then cached)."""
    return emu.build("window_attention", ["csrc/window_attention/window_attention_emu.cpp"])
