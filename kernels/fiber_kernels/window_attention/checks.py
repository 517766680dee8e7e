"""The argument checks of window attention, shared by the public op (``api.py``) and the launchers
(``cuda.py``): each failure names the argument and the expected shape, dtype or value. They return the
call's :class:`~.geometry.WindowGeometry`, so the geometry is computed once, from checked arguments."""

from __future__ import annotations

import math

import torch

from .._validate import FLOAT_DTYPES, check_positive_int, check_same_device, check_same_dtype, check_scale, check_tensor
from .geometry import WindowGeometry

QKV_SHAPE = "(B, H, W, 3C)"
OUT_SHAPE = "(B, H, W, C)"
LSE_SHAPE = "(B*nW, num_heads, N)"


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


def check_window_attention(qkv: object, rpb_table: object, qkv_bias: object, num_heads: object, window_size: object,
                           shift_size: object, scale: object, mask_value: object, shift_first: object,
                           default_scale: bool = True) -> WindowGeometry:
    """Check the arguments of ``window_attention`` and return their geometry.

    qkv ``(B, H, W, 3C)``, rpb_table ``((2Wh-1)(2Ww-1), num_heads)``, qkv_bias ``(3C,)`` or None, one float
    dtype and device; ``window_size`` / ``shift_size`` an int or ``(h, w)`` with ``0 <= shift < window``;
    ``mask_value`` finite; ``shift_first`` a bool; ``scale`` a finite float > 0, or None for
    ``(C/num_heads) ** -0.5`` when ``default_scale`` (the public op; launchers pass False).
    Raises ``TypeError`` / ``ValueError``.
    """
    check_tensor("qkv", qkv, ndim=4, dtypes=FLOAT_DTYPES, shape_doc=QKV_SHAPE)
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
        raise ValueError(f"qkv must have 3C channels {QKV_SHAPE}, got {C3} channels")
    if (C3 // 3) % num_heads != 0:
        raise ValueError(f"C = {C3 // 3} (qkv {QKV_SHAPE}) must be divisible by num_heads = {num_heads}")
    if not isinstance(shift_first, bool):
        raise TypeError(f"shift_first must be a bool, got {type(shift_first).__name__}")
    scale = check_scale(scale, C3 // 3 // num_heads if default_scale else None)
    geometry = WindowGeometry.of(qkv.shape, num_heads, window, shift, scale, float(mask_value), shift_first)
    if tuple(rpb_table.shape) != geometry.table_shape:
        raise ValueError(f"rpb_table must have shape ((2Wh-1)*(2Ww-1), num_heads) = {geometry.table_shape} for "
                         f"window {window}, got {tuple(rpb_table.shape)}")
    if shift[0] >= window[0] or shift[1] >= window[1]:
        raise ValueError(f"shift_size must be smaller than window_size in each axis, got shift {shift} and "
                         f"window {window}")
    if qkv_bias is not None and tuple(qkv_bias.shape) != (C3,):
        raise ValueError(f"qkv_bias must have shape (3C,) = ({C3},), got {tuple(qkv_bias.shape)}")
    return geometry


def check_launch(qkv: object, rpb_table: object, qkv_bias: object, geometry: object) -> WindowGeometry:
    """A launcher's checks: the public op's (``scale`` must be given) on the tensors with the settings of
    ``geometry``, and ``geometry`` must be the one of these tensors. Returns it."""
    if not isinstance(geometry, WindowGeometry):
        raise TypeError(f"geometry must be a WindowGeometry, got {type(geometry).__name__}")
    found = check_window_attention(qkv, rpb_table, qkv_bias, geometry.num_heads, geometry.window, geometry.shift,
                                   geometry.scale, geometry.mask_value, geometry.shift_first, default_scale=False)
    if found != geometry:
        raise ValueError(f"qkv {QKV_SHAPE} has shape {tuple(qkv.shape)}, but the geometry is for "
                         f"{geometry.qkv_shape}")
    return geometry


def check_saved(qkv: torch.Tensor, grad_out: object, out: object, lse: object, geometry: WindowGeometry) -> None:
    """The backward's extra inputs: ``grad_out`` and the forward's ``out`` ``(B, H, W, C)`` in qkv's dtype
    and ``lse`` ``(B·nW, num_heads, N)`` fp32, on qkv's device."""
    check_tensor("grad_out", grad_out, ndim=4, dtypes=(qkv.dtype,), shape_doc=OUT_SHAPE)
    check_tensor("out", out, ndim=4, dtypes=(qkv.dtype,), shape_doc=OUT_SHAPE)
    check_tensor("lse", lse, ndim=3, dtypes=(torch.float32,), shape_doc=LSE_SHAPE)
    check_same_device(qkv=qkv, grad_out=grad_out, out=out, lse=lse)
    for name, tensor in (("grad_out", grad_out), ("out", out)):
        if tuple(tensor.shape) != geometry.out_shape:
            raise ValueError(f"{name} must have shape {OUT_SHAPE} = {geometry.out_shape}, got {tuple(tensor.shape)}")
    if tuple(lse.shape) != geometry.lse_shape:
        raise ValueError(f"lse must have shape {LSE_SHAPE} = {geometry.lse_shape}, got {tuple(lse.shape)}")
