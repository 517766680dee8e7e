"""Public entry point ``window_attention``: validation, dispatch, docs.

Backends (``fiber_kernels.dispatch``): ``triton`` (the custom op of ``function.py``; CUDA sm80+ in
fp16/bf16 at head dim 32, or CPU tensors under ``TRITON_INTERPRET=1`` when asked for by name),
``cuda`` (the same op on the ``csrc/`` kernels) and ``torch`` (``scaled_dot_product_attention`` with
the additive bias+mask: the CPU path, and on GPUs whatever the compiled kernels decline).
"""

from __future__ import annotations

import math

import torch

from .. import dispatch
from .._autocast import autocast_dtype, cast_floats
from .._validate import (
    FLOAT_DTYPES,
    check_positive_int,
    check_same_device,
    check_same_dtype,
    check_scale,
    check_tensor,
)
from .cuda import cuda_reasons
from .function import window_attention_op
from .reference import window_attention_sdpa
from .triton_common import MAX_WINDOW_TOKENS

TRITON_HEAD_DIMS = (16, 32, 64, 128)  # what the kernels take (the interpreter runs every one)
# What the compiled kernels run on sm80/sm90 without spilling, from ahead-of-time compiles of every
# variant (tests/window_attention/test_aot.py): fp16/bf16 at head dim 32 are spill-free for every
# window compiled (4x4 to 16x16). Head dim 16 spills at windows over 8x8 (64-744 B), 64 at windows
# 5x5, 6x6, 8x8 and 14x14 (8-48 B; since the padded-token fill is a select (issue 11, item 9) the forwards
# at 5x5-8x8 compile without spills, the sm90 forward at 14x14 still spills 40 B; the head-dim-64
# backward was not recompiled), 128 everywhere (8-88 B); fp32 inputs take exact fp32 FMA math
# (``DOT_PRECISION="ieee"``, no tensor cores), which spills in every config (up to 13.7 KB) and at
# head dim 128 needs 272 KB of shared memory. The torch backend (SDPA) serves those on GPUs.
TRITON_GPU_HEAD_DIMS = (32,)
TRITON_GPU_DTYPES = (torch.float16, torch.bfloat16)


def as_pair(name: str, value: object, minimum: int) -> tuple[int, int]:
    """``value`` as ``(h, w)``: an int or a pair of ints (not bools, not floats) >= ``minimum``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {len(pair)} values {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{name} must be >= {minimum} (an int or a pair (h, w)), got {value!r}")
    return pair


def check_window_attention(qkv: object, rpb_table: object, num_heads: object, window_size: object,
                           shift_size: object, qkv_bias: object, mask_value: object
                           ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validate the arguments of ``window_attention``; return ``(window, shift)`` as pairs."""
    check_tensor("qkv", qkv, ndim=4, dtypes=FLOAT_DTYPES, shape_doc="(B, H, W, 3C)")
    check_tensor("rpb_table", rpb_table, ndim=2, dtypes=FLOAT_DTYPES, shape_doc="((2Wh-1)*(2Ww-1), num_heads)")
    check_positive_int("num_heads", num_heads)
    window = as_pair("window_size", window_size, 1)
    shift = as_pair("shift_size", shift_size, 0)
    if qkv_bias is not None:
        check_tensor("qkv_bias", qkv_bias, ndim=1, dtypes=FLOAT_DTYPES, shape_doc="(3C,)")
    check_same_device(qkv=qkv, rpb_table=rpb_table, qkv_bias=qkv_bias)
    check_same_dtype(qkv=qkv, rpb_table=rpb_table, qkv_bias=qkv_bias)
    if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)):
        raise TypeError(f"mask_value must be a finite float, got {type(mask_value).__name__}")
    if not math.isfinite(mask_value):
        raise ValueError(f"mask_value must be a finite float, got {mask_value!r}")
    C3 = qkv.shape[-1]
    if C3 % 3 != 0:
        raise ValueError(f"qkv must have 3C channels (B, H, W, 3C), got {C3} channels")
    if (C3 // 3) % num_heads != 0:
        raise ValueError(f"C = {C3 // 3} (qkv (B, H, W, 3C)) must be divisible by num_heads = {num_heads}")
    table_rows = (2 * window[0] - 1) * (2 * window[1] - 1)
    if tuple(rpb_table.shape) != (table_rows, num_heads):
        raise ValueError(f"rpb_table must have shape ((2Wh-1)*(2Ww-1), num_heads) = {(table_rows, num_heads)} for "
                         f"window {window}, got {tuple(rpb_table.shape)}")
    if shift[0] >= window[0] or shift[1] >= window[1]:
        raise ValueError(f"shift_size must be smaller than window_size in each axis, got shift {shift} and "
                         f"window {window}")
    if qkv_bias is not None and tuple(qkv_bias.shape) != (C3,):
        raise ValueError(f"qkv_bias must have shape (3C,) = ({C3},), got {tuple(qkv_bias.shape)}")
    return window, shift


def _triton_reasons(device: dispatch.DeviceInfo, qkv: torch.Tensor, num_heads: int, window: tuple[int, int],
                    **_: object) -> list[str]:
    reasons = []
    head_dim = qkv.shape[-1] // 3 // num_heads
    if head_dim not in TRITON_HEAD_DIMS:
        reasons.append(f"head dim C/num_heads must be one of {TRITON_HEAD_DIMS}, got {head_dim}")
    if window[0] * window[1] > MAX_WINDOW_TOKENS:
        reasons.append(f"window of {window[0] * window[1]} tokens exceeds {MAX_WINDOW_TOKENS} (16x16)")
    if device.type == "cuda":
        reasons += _triton_gpu_reasons(device, qkv.dtype, head_dim)
    return reasons + dispatch.triton_dtype_reasons(device, qkv.dtype)


def _triton_gpu_reasons(device: dispatch.DeviceInfo, dtype: torch.dtype, head_dim: int) -> list[str]:
    """What the compiled kernels decline on a GPU (see ``TRITON_GPU_HEAD_DIMS``)."""
    reasons = []
    if device.capability is not None and device.capability < (8, 0):
        reasons.append(f"Triton has no tensor-core path below sm80, got sm{device.capability[0]}{device.capability[1]}")
    if dtype not in TRITON_GPU_DTYPES:
        reasons.append(f"{dtype} inputs need exact fp32 FMA math, which spills in every tile config on sm80/sm90; "
                       "the GPU kernels take float16 or bfloat16")
    if head_dim in TRITON_HEAD_DIMS and head_dim not in TRITON_GPU_HEAD_DIMS:
        reasons.append(f"head dim {head_dim} spills to local memory on sm80/sm90; the GPU kernels take head dim "
                       f"C/num_heads in {TRITON_GPU_HEAD_DIMS}")
    return reasons


def _window_attention_triton(qkv, rpb_table, qkv_bias, num_heads, window, shift, scale, mask_value, shift_first):
    return window_attention_op(qkv, rpb_table, qkv_bias, num_heads, window[0], window[1], shift[0], shift[1], scale,
                               mask_value, shift_first)[0]


dispatch.register_backend("window_attention", "triton", _window_attention_triton, _triton_reasons)


def _window_attention_cuda(qkv, rpb_table, qkv_bias, num_heads, window, shift, scale, mask_value, shift_first):
    return window_attention_op(qkv, rpb_table, qkv_bias, num_heads, window[0], window[1], shift[0], shift[1], scale,
                               mask_value, shift_first, "cuda")[0]


dispatch.register_backend("window_attention", "cuda", _window_attention_cuda, cuda_reasons)


def _window_attention_torch(qkv, rpb_table, qkv_bias, num_heads, window, shift, scale, mask_value, shift_first):
    return window_attention_sdpa(qkv, rpb_table, num_heads, window, shift, scale, qkv_bias, mask_value, shift_first)


dispatch.register_backend("window_attention", "torch", _window_attention_torch)


def window_attention(qkv: torch.Tensor, rpb_table: torch.Tensor, num_heads: int, window_size: int | tuple[int, int],
                     shift_size: int | tuple[int, int], *, scale: float | None = None,
                     qkv_bias: torch.Tensor | None = None, mask_value: float = -100.0, shift_first: bool = False,
                     backend: str = "auto") -> torch.Tensor:
    """Swin (shifted) window attention in one op, from the qkv projection to merged windows.

    qkv ``(B, H, W, 3C)`` channels-last: the qkv linear applied to the *unpadded* normed tokens
    (channel layout ``[q | k | v]``, each ``(num_heads, C/num_heads)``, as Swin's reshape).
    rpb_table ``((2Wh-1)(2Ww-1), num_heads)``: Swin's ``relative_position_bias_table``.
    qkv_bias ``(3C,)`` or None: the qkv linear's bias, which is what padded tokens hold (Swin pads
    the normed map with zeros before the projection); gradients flow into its k and v parts.
    window_size / shift_size: int or ``(h, w)``; ``0 <= shift < window``. ``scale`` defaults to
    ``(C/num_heads) ** -0.5``; ``mask_value`` (-100, as Swin/FIBER) is added between tokens of
    different shift regions. ``shift_first=False`` pads then shifts (official Swin, FIBER,
    mmdetection, torchvision); True shifts the unpadded map, then pads (timm). H and W need not be
    multiples of the window. Dtypes fp32, fp16, bf16 (qkv, table and bias alike). Returns
    ``(B, H, W, C)`` at the original token positions, in qkv's dtype (before Swin's output ``proj``).
    Under ``torch.autocast`` qkv, the table and the bias are cast to the region's dtype first
    (``fiber_kernels._autocast``).
    """
    qkv, rpb_table, qkv_bias = cast_floats(autocast_dtype(qkv), qkv, rpb_table, qkv_bias)
    window, shift = check_window_attention(qkv, rpb_table, num_heads, window_size, shift_size, qkv_bias, mask_value)
    if not isinstance(shift_first, bool):
        raise TypeError(f"shift_first must be a bool, got {type(shift_first).__name__}")
    scale = check_scale(scale, qkv.shape[-1] // 3 // num_heads)
    chosen = dispatch.select_backend("window_attention", dispatch.DeviceInfo.of(qkv), backend,
                                     inputs={"qkv": qkv, "num_heads": num_heads, "window": window})
    return chosen.impl(qkv, rpb_table, qkv_bias, num_heads, window, shift, scale, float(mask_value), shift_first)
