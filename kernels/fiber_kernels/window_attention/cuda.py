"""The ``csrc/window_attention`` CUDA kernels from Python: validation, then ``ops.window_attention_fwd/_bwd``.

Plain functions (no autograd) with the argument order and returns of the Triton launchers
(``triton_fwd.window_attention_fwd`` / ``triton_bwd.window_attention_bwd``), so the autograd custom op
can call either. ``ops`` defaults to ``torch.ops.fiber_kernels_C`` (the compiled ``_C``, CUDA tensors);
the tests pass the host-emulation module of the same kernels (CPU tensors), so the path checked there
is the one a GPU user runs. fp16 runs on tensor cores (wmma, sm70+); fp32 and bf16 on fp32 FMA.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _extension, dispatch
from .._validate import check_same_device, check_scale, check_tensor

CUDA_HEAD_DIMS = (16, 32, 64)
CUDA_MAX_WINDOW_TOKENS = 144  # 12x12, FIBER's window; csrc kMaxTokens


def _default_ops() -> Any:
    _extension.is_built()  # importing fiber_kernels._C registers its ops
    return torch.ops.fiber_kernels_C


def unsupported_shape_reasons(qkv_shape: tuple[int, ...], num_heads: int, window: tuple[int, int]) -> list[str]:
    """Why the CUDA kernels cannot take qkv ``(B, H, W, 3C)`` with these heads and window (otherwise valid):
    the head dim and the window's token count. Empty when they can. The dispatcher reports these for the
    ``cuda`` backend; :func:`forward` / :func:`backward` raise the first."""
    reasons = []
    head_dim = qkv_shape[-1] // 3 // num_heads
    if head_dim not in CUDA_HEAD_DIMS:
        reasons.append(f"head dim C/num_heads must be one of {CUDA_HEAD_DIMS}, got {head_dim}")
    if window[0] * window[1] > CUDA_MAX_WINDOW_TOKENS:
        reasons.append(f"window of {window[0] * window[1]} tokens exceeds {CUDA_MAX_WINDOW_TOKENS} (12x12)")
    return reasons


def cuda_reasons(device: dispatch.DeviceInfo, qkv: torch.Tensor, num_heads: int, window: tuple[int, int],
                 **_: object) -> list[str]:
    """Why the CUDA kernels cannot run these inputs (empty when they can): the dispatch ``reasons``
    (dispatch adds the generic ones: CUDA tensors, ``_C`` built with a CUDA kernel for the op)."""
    return unsupported_shape_reasons(tuple(qkv.shape), num_heads, window)


def _check_limits(qkv: torch.Tensor, num_heads: int, window: tuple[int, int]) -> None:
    reasons = unsupported_shape_reasons(tuple(qkv.shape), num_heads, window)
    if reasons:
        raise ValueError(f"qkv (B, H, W, 3C), num_heads {num_heads}, window_size {window}: {reasons[0]}")


def _check_settings(scale: object, shift_first: object) -> float:
    scale = check_scale(scale)
    if not isinstance(shift_first, bool):
        raise TypeError(f"shift_first must be a bool, got {type(shift_first).__name__}")
    return scale


def _check_common(*args: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    # Imported here: api imports function (the autograd op), which imports this module.
    from .api import check_window_attention

    return check_window_attention(*args)


def forward(qkv: torch.Tensor, rpb_table: torch.Tensor, qkv_bias: torch.Tensor | None, num_heads: int,
            window: tuple[int, int], shift: tuple[int, int], scale: float, mask_value: float, shift_first: bool,
            ops: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused window attention forward by the CUDA kernel.

    qkv ``(B, H, W, 3C)``, rpb_table ``((2Wh-1)(2Ww-1), nH)``, qkv_bias ``(3C,)`` or None, all one
    dtype (fp32, fp16, bf16) and device. Returns ``out (B, H, W, C)`` in qkv's dtype and
    ``lse (B·nW, nH, N)`` fp32 (the softmax row log-sum-exp the backward needs).
    """
    window, shift = _check_common(qkv, rpb_table, num_heads, window, shift, qkv_bias, mask_value)
    scale = _check_settings(scale, shift_first)
    _check_limits(qkv, num_heads, window)
    ops = ops if ops is not None else _default_ops()
    return ops.window_attention_fwd(qkv, rpb_table, qkv_bias, num_heads, window[0], window[1], shift[0], shift[1],
                                    scale, float(mask_value), shift_first)


def backward(grad_out: torch.Tensor, qkv: torch.Tensor, rpb_table: torch.Tensor, qkv_bias: torch.Tensor | None,
             out: torch.Tensor, lse: torch.Tensor, num_heads: int, window: tuple[int, int], shift: tuple[int, int],
             scale: float, mask_value: float, shift_first: bool,
             ops: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients by the CUDA kernels: ``dqkv (B, H, W, 3C)`` (qkv dtype), ``drpb_table (R, nH)`` (table
    dtype, bitwise deterministic) and ``dqkv_bias (3C,)`` (q part zero) or None without a bias.

    grad_out ``(B, H, W, C)``; out and lse are the forward's outputs.
    """
    window, shift = _check_common(qkv, rpb_table, num_heads, window, shift, qkv_bias, mask_value)
    scale = _check_settings(scale, shift_first)
    _check_limits(qkv, num_heads, window)
    B, H, W, C3 = qkv.shape
    shape = (B, H, W, C3 // 3)
    check_tensor("grad_out", grad_out, ndim=4, dtypes=(qkv.dtype,), shape_doc="(B, H, W, C)")
    check_tensor("out", out, ndim=4, dtypes=(qkv.dtype,), shape_doc="(B, H, W, C)")
    check_tensor("lse", lse, ndim=3, dtypes=(torch.float32,), shape_doc="(B*nW, num_heads, N)")
    check_same_device(qkv=qkv, grad_out=grad_out, out=out, lse=lse)
    for name, tensor in (("grad_out", grad_out), ("out", out)):
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape (B, H, W, C) = {shape}, got {tuple(tensor.shape)}")
    windows = B * -(-H // window[0]) * -(-W // window[1])
    lse_shape = (windows, num_heads, window[0] * window[1])
    if tuple(lse.shape) != lse_shape:
        raise ValueError(f"lse must have shape (B*nW, num_heads, N) = {lse_shape}, got {tuple(lse.shape)}")
    ops = ops if ops is not None else _default_ops()
    dqkv, dtable, dbias = ops.window_attention_bwd(grad_out, qkv, rpb_table, qkv_bias, out, lse, num_heads, window[0],
                                                   window[1], shift[0], shift[1], scale, float(mask_value),
                                                   shift_first)
    return dqkv, dtable, dbias if qkv_bias is not None else None
