"""Public entry point ``window_attention``: validation, dispatch, docs.

Backends (``fiber_kernels.dispatch``): ``triton`` (the custom op of ``function.py``; CUDA sm80+ in
fp16/bf16 at head dim 32, or CPU tensors under ``TRITON_INTERPRET=1`` when asked for by name) and
``cuda`` (the same op on the ``csrc/`` kernels), both registered from the launcher table
``function.LAUNCHERS``, and ``torch`` (``scaled_dot_product_attention`` with the additive bias+mask: the
CPU path, and on GPUs whatever the compiled kernels decline). Each backend's limits are data next to its
kernels (``triton_common.LIMITS``, ``cuda.LIMITS``); the reasons beside them (``triton_common.reasons``,
``cuda.reasons``) read them."""

from __future__ import annotations

import torch

from .. import dispatch
from .._autocast import autocast_dtype, cast_floats
from .checks import check_window_attention
from .function import LAUNCHERS, OP, window_attention_op
from .geometry import WindowGeometry
from .reference import window_attention_sdpa


def _launch(backend: str):
    """The ``backend`` entry of the launcher table: the custom op running that launcher, returning ``out``."""
    def impl(qkv, rpb_table, qkv_bias, geometry: WindowGeometry) -> torch.Tensor:
        return window_attention_op(qkv, rpb_table, qkv_bias, *geometry.op_args(), backend)[0]

    return impl


def _window_attention_torch(qkv, rpb_table, qkv_bias, geometry: WindowGeometry) -> torch.Tensor:
    g = geometry
    return window_attention_sdpa(qkv, rpb_table, g.num_heads, g.window, g.shift, g.scale, qkv_bias, g.mask_value,
                                 g.shift_first)


dispatch.register_launchers(OP, LAUNCHERS, _launch)
dispatch.register_backend(OP, "torch", _window_attention_torch, limits=dispatch.BackendLimits())  # SDPA: any size


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
    geometry = check_window_attention(qkv, rpb_table, qkv_bias, num_heads, window_size, shift_size, scale, mask_value,
                                      shift_first)
    chosen = dispatch.select_backend(OP, dispatch.DeviceInfo.of(qkv), backend,
                                     inputs={"qkv": qkv, "geometry": geometry})
    return chosen.impl(qkv, rpb_table, qkv_bias, geometry)
