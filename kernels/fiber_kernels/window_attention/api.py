"""Public entry point ``window_attention``: validation, dispatch, docs.

Backends (``fiber_kernels.dispatch``): ``triton`` (the custom op of ``function.py``; CUDA sm80+ in
fp16/bf16 at head dim 32, or CPU tensors under ``TRITON_INTERPRET=1`` when asked for by name),
``cuda`` (the same op on the ``csrc/`` kernels) and ``torch`` (``scaled_dot_product_attention`` with
the additive bias+mask: the CPU path, and on GPUs whatever the compiled kernels decline). Each backend's
limits are data next to its kernels (``triton_common.LIMITS``, ``cuda.LIMITS``); the reasons read them.
"""

from __future__ import annotations

import torch

from .. import dispatch
from .._autocast import autocast_dtype, cast_floats
from . import cuda, triton_common
from .checks import check_window_attention
from .function import window_attention_op
from .geometry import WindowGeometry
from .reference import window_attention_sdpa

OP = "window_attention"


def _triton_reasons(device: dispatch.DeviceInfo, qkv: torch.Tensor, geometry: WindowGeometry, **_: object
                    ) -> list[str]:
    limits = triton_common.LIMITS
    reasons = (limits.head_dim_reasons(geometry.head_dim, "head dim C/num_heads")
               + limits.window_reasons(geometry.tokens))
    if device.type == "cuda":
        reasons += limits.capability_reasons(device) + _triton_gpu_reasons(qkv.dtype, geometry.head_dim)
    return reasons + dispatch.triton_dtype_reasons(device, qkv.dtype)


def _triton_gpu_reasons(dtype: torch.dtype, head_dim: int) -> list[str]:
    """What the compiled kernels decline on a GPU (``triton_common.LIMITS.gpu_dtypes`` / ``gpu_head_dims``)."""
    limits = triton_common.LIMITS
    reasons = []
    if dtype not in limits.gpu_dtypes:
        reasons.append(f"{dtype} inputs need exact fp32 FMA math, which spills in every tile config on sm80/sm90; "
                       "the GPU kernels take float16 or bfloat16")
    if head_dim in limits.head_dims and head_dim not in limits.gpu_head_dims:
        reasons.append(f"head dim {head_dim} spills to local memory on sm80/sm90; the GPU kernels take head dim "
                       f"C/num_heads in {limits.gpu_head_dims}")
    return reasons


def _launch(backend: str):
    def impl(qkv, rpb_table, qkv_bias, geometry: WindowGeometry) -> torch.Tensor:
        return window_attention_op(qkv, rpb_table, qkv_bias, *geometry.op_args(), backend)[0]

    return impl


def _window_attention_torch(qkv, rpb_table, qkv_bias, geometry: WindowGeometry) -> torch.Tensor:
    g = geometry
    return window_attention_sdpa(qkv, rpb_table, g.num_heads, g.window, g.shift, g.scale, qkv_bias, g.mask_value,
                                 g.shift_first)


dispatch.register_backend(OP, "triton", _launch("triton"), _triton_reasons, triton_common.LIMITS)
dispatch.register_backend(OP, "cuda", _launch("cuda"), cuda.cuda_reasons, cuda.LIMITS)
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
