"""The ``csrc/window_attention`` CUDA kernels from Python: validation, then ``ops.window_attention_fwd/_bwd``.

Plain functions (no autograd) with the arguments and returns of the Triton launchers
(``triton_fwd.window_attention_fwd`` / ``triton_bwd.window_attention_bwd``: tensors, then the call's
``WindowGeometry``), so the autograd custom op picks either from one table (``function.LAUNCHERS``, which
also carries ``LIMITS`` and :func:`reasons` to dispatch).
``ops`` defaults to ``torch.ops.fiber_kernels_C`` (the compiled ``_C``, CUDA tensors); the tests pass the
host-emulation module of the same kernels (CPU tensors), so the path checked there is the one a GPU user
runs. fp16 runs on tensor cores (wmma, sm70+); fp32 and bf16 on fp32 FMA.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _extension, dispatch
from .checks import check_launch, check_saved
from .geometry import WindowGeometry

# What csrc/window_attention takes (tests/test_limits.py: the same as its C++ constants kHeadDims, kMaxTokens).
LIMITS = dispatch.BackendLimits(head_dims=(16, 32, 64), max_window_tokens=144)  # 144: 12x12, FIBER's window


def _ops(ops: Any) -> Any:
    return _extension.compiled_ops() if ops is None else ops


def unsupported_reasons(geometry: WindowGeometry) -> list[str]:
    """Why the CUDA kernels cannot take this (otherwise valid) call: the head dim and the window's token
    count against ``LIMITS``. Empty when they can. The dispatcher reports these for the ``cuda`` backend;
    :func:`forward` / :func:`backward` raise the first."""
    return LIMITS.head_dim_reasons(geometry.head_dim, "head dim C/num_heads") + LIMITS.window_reasons(geometry.tokens)


def reasons(device: dispatch.DeviceInfo, geometry: WindowGeometry, **_: object) -> list[str]:
    """Why the CUDA kernels cannot run these inputs (empty when they can): the dispatch ``reasons``
    (dispatch adds the generic ones: CUDA tensors, ``_C`` built with a CUDA kernel for the op)."""
    return unsupported_reasons(geometry)


def _check(qkv: object, rpb_table: object, qkv_bias: object, geometry: object) -> WindowGeometry:
    geometry = check_launch(qkv, rpb_table, qkv_bias, geometry)
    problems = unsupported_reasons(geometry)
    if problems:
        raise ValueError(f"qkv (B, H, W, 3C), num_heads {geometry.num_heads}, window_size {geometry.window}: "
                         f"{problems[0]}")
    return geometry


def forward(qkv: torch.Tensor, rpb_table: torch.Tensor, qkv_bias: torch.Tensor | None, geometry: WindowGeometry,
            ops: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused window attention forward by the CUDA kernel.

    qkv ``(B, H, W, 3C)``, rpb_table ``((2Wh-1)(2Ww-1), nH)``, qkv_bias ``(3C,)`` or None, all one
    dtype (fp32, fp16, bf16) and device; ``geometry`` theirs. Returns ``out (B, H, W, C)`` in qkv's dtype
    and ``lse (B·nW, nH, N)`` fp32 (the softmax row log-sum-exp the backward needs).
    """
    geometry = _check(qkv, rpb_table, qkv_bias, geometry)
    return _ops(ops).window_attention_fwd(qkv, rpb_table, qkv_bias, *geometry.op_args())


def backward(grad_out: torch.Tensor, qkv: torch.Tensor, rpb_table: torch.Tensor, qkv_bias: torch.Tensor | None,
             out: torch.Tensor, lse: torch.Tensor, geometry: WindowGeometry,
             ops: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients by the CUDA kernels: ``dqkv (B, H, W, 3C)`` (qkv dtype), ``drpb_table (R, nH)`` (table
    dtype, bitwise deterministic) and ``dqkv_bias (3C,)`` (q part zero) or None without a bias.

    grad_out ``(B, H, W, C)``; out and lse are the forward's outputs.
    """
    geometry = _check(qkv, rpb_table, qkv_bias, geometry)
    check_saved(qkv, grad_out, out, lse, geometry)
    dqkv, dtable, dbias = _ops(ops).window_attention_bwd(grad_out, qkv, rpb_table, qkv_bias, out, lse,
                                                         *geometry.op_args())
    return dqkv, dtable, dbias if qkv_bias is not None else None
