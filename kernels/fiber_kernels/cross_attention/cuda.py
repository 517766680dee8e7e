"""Launchers of the ``csrc/cross_attention`` CUDA kernels (plain functions, no autograd).

Same arguments and returns as the Triton launchers of ``triton_attention.py`` and ``triton_linear.py``,
so the ``cuda`` backend is the Triton custom ops with these calls swapped in: :func:`forward` returns
``(out, lse)`` with lse ``(B, H, Nq)`` fp32 natural log (``+inf`` on rows with no unpadded key),
:func:`backward` returns ``(dq, dk, dv)``; :func:`gated_linear_forward` / :func:`gated_linear_backward`
are ``gated_linear_fwd`` / ``gated_linear_bwd``. fp16 runs on tensor cores through ``nvcuda::wmma``
(sm70+), fp32 and bf16 through fp32 FMA. ``ops`` defaults to ``torch.ops.fiber_kernels_C``; the tests
pass the host emulation of the same kernels (``fiber_kernels.testing.emu``), so the path tested on the
CPU is the one a GPU runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import _extension, dispatch
from .._validate import FLOAT_DTYPES, check_same_device, check_same_dtype, check_scale, check_tensor
from .checks import Q_SHAPE, check_cross_attention

# What csrc/cross_attention takes (tests/test_limits.py: the same as the C++ checks of cross_attention_launch.h):
# Bk * H is the grid's y dimension; the kernels index the G * Nq shared query rows and the Nk keys with int32.
LIMITS = dispatch.BackendLimits(head_dims=(32, 64, 128), max_grid_y=dispatch.CUDA_MAX_GRID_Y,
                                max_rows=dispatch.INT32_MAX)
LINEAR_LIMITS = dispatch.BackendLimits()


def _ops(ops: Any) -> Any:
    return _extension.compiled_ops() if ops is None else ops


def unsupported_shape_reasons(q_shape: Sequence[int], k_shape: Sequence[int]) -> list[str]:
    """Why the CUDA kernels cannot take q ``(B, H, Nq, D)`` and k ``(Bk, H, Nk, D)`` of these otherwise valid
    shapes (``B % Bk == 0``): the head dim, the grid's y dimension and the int32 row indices. Empty when they can.
    The dispatcher reports these for the ``cuda`` backend; :func:`forward` / :func:`backward` raise the first."""
    batch, _, seqlen_q, head_dim = q_shape
    key_batches, heads, seqlen_k, _ = k_shape
    problems = LIMITS.head_dim_reasons(head_dim, "head dim D", " for the CUDA kernels")
    if key_batches * heads > LIMITS.max_grid_y:
        problems.append(f"Bk * H must be <= {LIMITS.max_grid_y} for the CUDA kernels (the grid's y dimension), "
                        f"got {key_batches * heads}")
    shared_rows = batch // key_batches * seqlen_q
    if shared_rows > LIMITS.max_rows or seqlen_k > LIMITS.max_rows:
        problems.append(f"the shared query rows (B // Bk) * Nq and the keys Nk must be <= {LIMITS.max_rows} for the "
                        f"CUDA kernels (int32 row indices), got {shared_rows} and {seqlen_k}")
    return problems


def reasons(device: dispatch.DeviceInfo, q: torch.Tensor, k: torch.Tensor, **_: object) -> list[str]:
    """The dispatch reasons of the attention kernels: :func:`unsupported_shape_reasons` (dispatch adds the generic
    ones: CUDA tensors, ``_C`` built with a CUDA kernel for the op)."""
    return unsupported_shape_reasons(q.shape, k.shape)


def _check_attention(q: object, k: object, v: object, key_padding_mask: object) -> None:
    """The public op's checks (``checks.check_cross_attention``), then the first shape limit of the kernels."""
    check_cross_attention(q, k, v, key_padding_mask)
    problems = unsupported_shape_reasons(q.shape, k.shape)
    if problems:
        raise ValueError(problems[0])


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None, scale: float,
            ops: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention forward. q ``(B, H, Nq, D)``, k/v ``(Bk, H, Nk, D)`` (B % Bk == 0, D in 32/64/128),
    ``key_padding_mask`` bool ``(Bk, Nk)`` True = padding, or None. Returns out ``(B, H, Nq, D)`` (dtype
    of q) and lse ``(B, H, Nq)`` fp32."""
    _check_attention(q, k, v, key_padding_mask)
    scale = check_scale(scale)
    return _ops(ops).cross_attention_fwd(q, k, v, key_padding_mask, scale)


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, key_padding_mask: torch.Tensor | None, scale: float,
             ops: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq ``(B, H, Nq, D)``, dk and dv ``(Bk, H, Nk, D)`` (summed over the query groups sharing keys) of
    :func:`forward`, from ``grad_out`` and the saved ``out`` ``(B, H, Nq, D)`` and ``lse`` ``(B, H, Nq)`` fp32."""
    _check_attention(q, k, v, key_padding_mask)
    check_tensor("grad_out", grad_out, ndim=4, dtypes=(q.dtype,), shape_doc=Q_SHAPE)
    check_tensor("out", out, ndim=4, dtypes=(q.dtype,), shape_doc=Q_SHAPE)
    check_tensor("lse", lse, ndim=3, dtypes=(torch.float32,), shape_doc="(B, H, Nq)")
    check_same_device(q=q, grad_out=grad_out, out=out, lse=lse)
    for name, tensor in (("grad_out", grad_out), ("out", out)):
        if tensor.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {Q_SHAPE} = {tuple(q.shape)}, got {tuple(tensor.shape)}")
    if lse.shape != q.shape[:3]:
        raise ValueError(f"lse must have shape (B, H, Nq) = {tuple(q.shape[:3])}, got {tuple(lse.shape)}")
    scale = check_scale(scale)
    return _ops(ops).cross_attention_bwd(grad_out, q, k, v, out, lse, key_padding_mask, scale)


def _check_gate(gate: object, a: torch.Tensor) -> None:
    check_tensor("gate", gate, dtypes=(torch.float32,), shape_doc="(one element)")
    check_same_device(a=a, gate=gate)
    if gate.numel() != 1:
        raise ValueError(f"gate must have exactly one element, got shape {tuple(gate.shape)}")


def _check_linear_operands(name: str, rows_tensor: object, a: object, weight: object) -> None:
    check_tensor(name, rows_tensor, ndim=2, dtypes=FLOAT_DTYPES, shape_doc="(M, O)")
    check_tensor("a", a, ndim=2, dtypes=FLOAT_DTYPES, shape_doc="(M, I)")
    check_tensor("weight", weight, ndim=2, dtypes=FLOAT_DTYPES, shape_doc="(O, I)")
    check_same_device(**{name: rows_tensor, "a": a, "weight": weight})
    check_same_dtype(**{name: rows_tensor, "a": a, "weight": weight})
    if rows_tensor.shape[0] != a.shape[0]:
        raise ValueError(f"{name} (M, O) and a (M, I) must have the same M, got {tuple(rows_tensor.shape)} and "
                         f"{tuple(a.shape)}")
    if tuple(weight.shape) != (rows_tensor.shape[1], a.shape[1]):
        raise ValueError(f"weight must have shape (O, I) = {(rows_tensor.shape[1], a.shape[1])}, "
                         f"got {tuple(weight.shape)}")


def gated_linear_forward(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         gate: torch.Tensor, ops: Any = None) -> torch.Tensor:
    """``x + gate * (a @ weightᵀ + bias)``: x ``(M, O)``, a ``(M, I)``, weight ``(O, I)``, bias ``(O,)`` or None
    (one dtype), gate one fp32 element (``g(alpha)``, computed by the caller). Returns ``(M, O)``."""
    _check_linear_operands("x", x, a, weight)
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=(a.dtype,), shape_doc="(O,)")
        check_same_device(a=a, bias=bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape (O,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    _check_gate(gate, a)
    return _ops(ops).gated_residual_linear_fwd(x, a, weight, bias, gate)


def gated_linear_backward(grad_out: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                          ops: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(da, G)``: ``da = gate * grad_out @ weight`` ``(M, I)`` (dtype of a) and ``G = grad_outᵀ @ a``
    ``(O, I)`` fp32, from grad_out ``(M, O)``, a ``(M, I)``, weight ``(O, I)`` and the fp32 gate."""
    _check_linear_operands("grad_out", grad_out, a, weight)
    _check_gate(gate, a)
    return _ops(ops).gated_residual_linear_bwd(grad_out, a, weight, gate)
