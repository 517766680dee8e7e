"""torch.library custom ops (namespace ``fiber_kernels``) around the window-attention launchers, with fake
implementations (FakeTensorMode / torch.compile trace them) and autograd.

``fiber_kernels::window_attention`` saves qkv, the table, the qkv bias, its output and the row
log-sum-exp ``(B·nW, nH, N)`` fp32: never the ``(B·nW, nH, N, N)`` attention matrix. The ops take the
call's ``WindowGeometry`` flattened to plain arguments (``WindowGeometry.op_args``) and rebuild it once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import register_flop_formula

from ..dispatch import Launchers, pick_launcher
from . import cuda, triton_bwd, triton_common, triton_fwd
from .geometry import WindowGeometry
from .triton_common import pick_config

OP = "window_attention"
# The backends that run inside this custom op, by name (api.py registers every entry with dispatch): the launchers
# (cuda.py mirrors triton_fwd.py / triton_bwd.py), the limits of their kernels and their dispatch reasons. Any other
# name is refused (dispatch.pick_launcher).
LAUNCHERS = {
    "triton": Launchers(triton_fwd.window_attention_fwd, triton_bwd.window_attention_bwd, triton_common.LIMITS,
                        triton_common.reasons),
    "cuda": Launchers(cuda.forward, cuda.backward, cuda.LIMITS, cuda.reasons),
}


@torch.library.custom_op("fiber_kernels::window_attention", mutates_args=())
def window_attention_op(qkv: torch.Tensor, rpb_table: torch.Tensor, qkv_bias: torch.Tensor | None, num_heads: int,
                        window_h: int, window_w: int, shift_h: int, shift_w: int, scale: float, mask_value: float,
                        shift_first: bool, backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """Fused Swin window attention: ``(out (B, H, W, C), lse (B·nW, nH, N) fp32)`` from qkv ``(B, H, W, 3C)``."""
    geometry = WindowGeometry.from_op_args(qkv.shape, num_heads, window_h, window_w, shift_h, shift_w, scale,
                                           mask_value, shift_first)
    return pick_launcher(OP, LAUNCHERS, backend).forward(qkv, rpb_table, qkv_bias, geometry)


@window_attention_op.register_fake
def _(qkv, rpb_table, qkv_bias, num_heads, window_h, window_w, shift_h, shift_w, scale, mask_value, shift_first,
      backend="triton"):
    geometry = WindowGeometry.from_op_args(qkv.shape, num_heads, window_h, window_w, shift_h, shift_w, scale,
                                           mask_value, shift_first)
    return qkv.new_empty(geometry.out_shape), qkv.new_empty(geometry.lse_shape, dtype=torch.float32)


@torch.library.custom_op("fiber_kernels::window_attention_backward", mutates_args=())
def window_attention_backward_op(grad_out: torch.Tensor, qkv: torch.Tensor, rpb_table: torch.Tensor,
                                 qkv_bias: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor,
                                 num_heads: int, window_h: int, window_w: int, shift_h: int, shift_w: int,
                                 scale: float, mask_value: float,
                                 shift_first: bool, backend: str = "triton"
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dqkv (B, H, W, 3C), drpb_table (R, nH), dqkv_bias (3C,))``; dqkv_bias is zeros without a bias."""
    geometry = WindowGeometry.from_op_args(qkv.shape, num_heads, window_h, window_w, shift_h, shift_w, scale,
                                           mask_value, shift_first)
    backward = pick_launcher(OP, LAUNCHERS, backend).backward
    dqkv, dtable, dbias = backward(grad_out, qkv, rpb_table, qkv_bias, out, lse, geometry)
    if dbias is None:
        dbias = qkv.new_zeros(qkv.shape[-1])
    return dqkv, dtable, dbias


@window_attention_backward_op.register_fake
def _(grad_out, qkv, rpb_table, qkv_bias, out, lse, num_heads, window_h, window_w, shift_h, shift_w, scale,
      mask_value, shift_first, backend="triton"):
    bias_dtype = qkv_bias.dtype if qkv_bias is not None else qkv.dtype
    return (qkv.new_empty(qkv.shape), torch.empty_like(rpb_table),
            qkv.new_empty((qkv.shape[-1],), dtype=bias_dtype))


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    qkv, rpb_table, qkv_bias, *settings = inputs
    out, lse = output
    ctx.save_for_backward(qkv, rpb_table, qkv_bias, out, lse)
    ctx.settings = settings


def _grad(ctx: Any, grad_out: torch.Tensor, grad_lse: torch.Tensor | None) -> tuple:
    qkv, rpb_table, qkv_bias, out, lse = ctx.saved_tensors
    dqkv, dtable, dbias = window_attention_backward_op(grad_out, qkv, rpb_table, qkv_bias, out, lse, *ctx.settings)
    return (dqkv, dtable, dbias if qkv_bias is not None else None) + (None,) * len(ctx.settings)


window_attention_op.register_autograd(_grad, setup_context=_setup)


def _tile_flops(geometry: WindowGeometry, matmuls: int, backward: bool) -> int:
    """Tensor-core FLOPs the kernels execute: ``matmuls`` products of a padded ``(m_tiles·BLOCK_M) x
    BLOCK_N x D`` tile per window and head (padding included: that is what the hardware runs)."""
    config = pick_config(geometry.tokens)
    block_m = config.bwd_block_m if backward else config.block_m
    rows = -(-geometry.tokens // block_m) * block_m
    return geometry.windows * geometry.num_heads * matmuls * 2 * rows * config.block_n * geometry.head_dim


# The flop formulas get the op's arguments (shapes for tensors): the geometry's plain arguments, then the backend.
@register_flop_formula(torch.ops.fiber_kernels.window_attention)
def _forward_flops(qkv_shape, rpb_table_shape, qkv_bias_shape, *settings, out_shape=None, **kwargs) -> int:
    # q·kᵀ and p·v
    return _tile_flops(WindowGeometry.from_op_args(qkv_shape, *settings[:8]), matmuls=2, backward=False)


@register_flop_formula(torch.ops.fiber_kernels.window_attention_backward)
def _backward_flops(grad_out_shape, qkv_shape, rpb_table_shape, qkv_bias_shape, out_shape_, lse_shape, *settings,
                    out_shape=None, **kwargs) -> int:
    # dq programs: q·kᵀ, do·vᵀ, ds·k; dk/dv programs: q·kᵀ, pᵀ·do, do·vᵀ, dsᵀ·q
    return _tile_flops(WindowGeometry.from_op_args(qkv_shape, *settings[:8]), matmuls=7, backward=True)
