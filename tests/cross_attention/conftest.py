"""Scaffolding shared by the cross-attention tests: the comparison of a backend's output and gradients with
the eager FIBER reference, and the emulation binding of the csrc/ kernels (cases and input builders live in
``_cases.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from fiber_kernels.cross_attention.reference import cross_attention_reference, gated_residual_linear_reference
from fiber_kernels.testing import emu
from fiber_kernels.testing.numerics import assert_close_to_reference

from ._cases import fresh

GRAD_NAMES = ("out", "dq", "dk", "dv")
LINEAR_GRAD_NAMES = ("out", "dx", "da", "dweight", "dbias", "dalpha")
# Absolute slack of the tolerance rule, for elements where PyTorch is exact (Nk = 1: dq is exactly 0 in
# PyTorch, while the kernels' recomputed p = exp(s - lse) carries fp32 rounding of ~1e-6).
ATOL = 1e-5

# kernel(q, k, v, key_padding_mask, grad_out) -> (out, dq, dk, dv), on detached inputs of the tested dtype
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
                  Sequence[torch.Tensor]]


def with_autograd(fn: Callable[..., torch.Tensor]) -> Kernel:
    """The kernel of a differentiable ``fn(q, k, v, key_padding_mask) -> out``: out and the gradients of q, k
    and v by autograd, on fresh leaves of the given inputs."""
    def kernel(q, k, v, key_padding_mask, grad_out):
        leaves = fresh(q, k, v)
        out = fn(*leaves, key_padding_mask)
        out.backward(grad_out)
        return [out.detach(), *(leaf.grad for leaf in leaves)]

    return kernel


def assert_matches_reference(kernel: Kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             key_padding_mask: torch.Tensor | None, grad_out: torch.Tensor, name: str,
                             dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """``kernel`` on q ``(B, H, Nq, D)``, k, v ``(Bk, H, Nk, D)`` and ``grad_out`` cast to ``dtype`` (default: the
    dtype of q; strides kept where no cast is needed) against the fp64 eager reference, by the tolerance rule
    of ``testing.numerics`` (the reference in ``dtype`` sets the scale of the error): out, dq, dk and dv each
    finite, in ``dtype`` with the reference's shape. Returns the kernel's ``[out, dq, dk, dv]``."""
    dtype = q.dtype if dtype is None else dtype
    reference = with_autograd(cross_attention_reference)
    wide = reference(*(t.to(torch.float64) for t in (q, k, v)), key_padding_mask, grad_out.to(torch.float64))
    same_dtype = reference(*(t.to(dtype) for t in (q, k, v)), key_padding_mask, grad_out.to(dtype))
    got = list(kernel(*(t.detach().to(dtype) for t in (q, k, v)), key_padding_mask, grad_out.to(dtype)))
    for label, value, ref, torch_value in zip(GRAD_NAMES, got, wide, same_dtype, strict=True):
        assert value.dtype == dtype and value.shape == ref.shape, f"{name} {label}"
        assert torch.isfinite(value).all(), f"{name} {label} has non-finite values"
        assert_close_to_reference(value, ref, torch_value, factor=3.0, atol_floor=ATOL, name=f"{name} {label}")
    return got


def assert_linear_matches_reference(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor | None],
                                    grad_out: torch.Tensor, gate: str, name: str,
                                    dtype: torch.dtype) -> None:
    """``fn(x, a, weight, bias, alpha, gate) -> out`` on ``inputs`` (x ``(..., O)``, a ``(..., I)``, weight ``(O, I)``,
    bias ``(O,)`` or None, alpha one element) cast to ``dtype`` against the fp64 eager reference by the tolerance rule:
    out and the gradients of x, a, weight, bias (None without one) and alpha, each in ``dtype`` with the reference's
    shape. dalpha is one sum over M * O products, a single sample of rounding, so its floor is relative."""
    def run(function: Callable[..., torch.Tensor], cast: torch.dtype) -> list[torch.Tensor | None]:
        leaves = [None if t is None else t.detach().to(cast).requires_grad_() for t in inputs]
        out = function(*leaves, gate)
        out.backward(grad_out.to(cast))
        return [out.detach()] + [None if leaf is None else leaf.grad for leaf in leaves]

    wide = run(gated_residual_linear_reference, torch.float64)
    same_dtype = run(gated_residual_linear_reference, dtype)
    got = run(fn, dtype)
    for label, value, ref, torch_value in zip(LINEAR_GRAD_NAMES, got, wide, same_dtype, strict=True):
        if ref is None:
            assert value is None, f"{name} {label}"
            continue
        assert value.dtype == dtype and value.shape == ref.shape, f"{name} {label}"
        floor = ATOL * max(1.0, ref.abs().max().item()) if label == "dalpha" else ATOL
        assert_close_to_reference(value, ref, torch_value, factor=3.0, atol_floor=floor, name=f"{name} {label}")


@pytest.fixture(scope="session")
def ops() -> emu.EmuModule:
    """The test binding of csrc/cross_attention/cross_attention_emu.cpp (built once, then cached)."""
    return emu.build("cross_attention", ["csrc/cross_attention/cross_attention_emu.cpp"])
