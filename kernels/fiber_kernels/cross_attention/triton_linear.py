"""Triton kernels of the gated residual output projection ``out = x + g(alpha) * (a @ Wᵀ + b)``.

Forward: one tiled matmul whose epilogue adds the bias, scales by the gate and adds the residual, so
neither ``a @ Wᵀ + b`` nor ``g * (...)`` is ever written to memory. Backward reuses one strided matmul
kernel twice: ``da = g * (dy @ W)`` (gate in the epilogue) and ``G = dyᵀ @ a`` in fp32, from which
``dW = g * G``, and ``dalpha = g'(alpha) * (<G, W> + <colsum(dy), b>)`` (the identity
``sum(dy * (a @ Wᵀ)) = <dyᵀ a, W>``), so dalpha needs no recomputed projection and is exact at
``alpha == 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..dispatch import BackendLimits, DeviceInfo, triton_dtype_reasons
from .triton_attention import dot_precision, gpu_reasons

LIMITS = BackendLimits(min_capability=(8, 0))  # tensor cores from sm80; any dtype of the op, any size


def reasons(device: DeviceInfo, x: torch.Tensor, **_: object) -> list[str]:
    """Why these kernels cannot take x ``(..., O)`` on ``device`` (the dispatch reasons; empty when they can)."""
    return gpu_reasons(device, x.dtype, LIMITS) + triton_dtype_reasons(device, x.dtype)


@dataclass(frozen=True)
class LinearConfig:
    """Tile sizes and launch shape of the gated linear kernels."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


# The launchers pick only from these (the ahead-of-time compile tests iterate them).
FWD_CONFIG = LinearConfig(64, 64, 32, 4, 3)
BWD_CONFIG = LinearConfig(64, 64, 32, 4, 3)


@triton.jit
def _gated_linear_fwd_kernel(
    A, W, BIAS, X, GATE, OUT,
    M, N, K,
    stride_am, stride_ak, stride_wn, stride_wk, stride_bias, stride_xm, stride_xn, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_valid = rows < M
    col_valid = cols < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start_k in range(0, K, BLOCK_K):
        offs_k = start_k + tl.arange(0, BLOCK_K)
        k_valid = offs_k < K
        a = tl.load(A + rows[:, None] * stride_am + offs_k[None, :] * stride_ak,
                    mask=row_valid[:, None] & k_valid[None, :], other=0.0)
        w = tl.load(W + cols[None, :] * stride_wn + offs_k[:, None] * stride_wk,
                    mask=col_valid[None, :] & k_valid[:, None], other=0.0)
        acc += tl.dot(a, w, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(BIAS + cols * stride_bias, mask=col_valid, other=0.0).to(tl.float32)[None, :]
    gate = tl.load(GATE).to(tl.float32)
    io_mask = row_valid[:, None] & col_valid[None, :]
    x = tl.load(X + rows[:, None] * stride_xm + cols[None, :] * stride_xn, mask=io_mask, other=0.0)
    out = x.to(tl.float32) + gate * acc
    tl.store(OUT + rows[:, None] * stride_om + cols[None, :] * stride_on, out.to(OUT.dtype.element_ty), mask=io_mask)


@triton.jit
def _gated_linear_bwd_kernel(
    A, B, GATE, C,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    SCALE_BY_GATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_valid = rows < M
    col_valid = cols < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start_k in range(0, K, BLOCK_K):
        offs_k = start_k + tl.arange(0, BLOCK_K)
        k_valid = offs_k < K
        a = tl.load(A + rows[:, None] * stride_am + offs_k[None, :] * stride_ak,
                    mask=row_valid[:, None] & k_valid[None, :], other=0.0)
        b = tl.load(B + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=k_valid[:, None] & col_valid[None, :], other=0.0)
        acc += tl.dot(a, b, input_precision=DOT_PRECISION)
    if SCALE_BY_GATE:
        acc = acc * tl.load(GATE).to(tl.float32)
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc.to(C.dtype.element_ty),
             mask=row_valid[:, None] & col_valid[None, :])


def gated_linear_fwd(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     gate: torch.Tensor) -> torch.Tensor:
    """x ``(M, O)``, a ``(M, I)``, weight ``(O, I)``, bias ``(O,)`` or None, gate one fp32 element → ``(M, O)``.
    Every tensor is read through its strides (any layout, expanded ones included)."""
    rows, out_features = x.shape
    in_features = a.shape[1]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    config = FWD_CONFIG
    grid = (triton.cdiv(rows, config.block_m), triton.cdiv(out_features, config.block_n))
    _gated_linear_fwd_kernel[grid](
        a, weight, bias if bias is not None else weight, x, gate, out,
        rows, out_features, in_features,
        *a.stride(), *weight.stride(), bias.stride(0) if bias is not None else 0, *x.stride(), *out.stride(),
        HAS_BIAS=bias is not None, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        DOT_PRECISION=dot_precision(a.dtype), num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def strided_matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``out = (gate *) a @ b`` for 2-D strided ``a (M, K)`` and ``b (K, N)``; accumulates in fp32."""
    config = BWD_CONFIG
    rows, inner = a.shape
    cols = b.shape[1]
    grid = (triton.cdiv(rows, config.block_m), triton.cdiv(cols, config.block_n))
    _gated_linear_bwd_kernel[grid](
        a, b, gate if gate is not None else out, out,
        rows, cols, inner,
        *a.stride(), *b.stride(), *out.stride(),
        SCALE_BY_GATE=gate is not None, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        DOT_PRECISION=dot_precision(a.dtype), num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def gated_linear_bwd(grad_out: torch.Tensor, a: torch.Tensor, weight: torch.Tensor,
                     gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(da, G)``: ``da = gate * grad_out @ weight`` ``(M, I)`` and ``G = grad_outᵀ @ a`` ``(O, I)`` fp32."""
    grad_a = strided_matmul(grad_out, weight, torch.empty_like(a, memory_format=torch.contiguous_format), gate)
    outer = torch.empty(weight.shape, device=a.device, dtype=torch.float32)
    strided_matmul(grad_out.t(), a, outer, None)
    return grad_a, outer
