"""``patch_timm_swin(model)``: fused window attention in every block of a live timm Swin (V1)."""

from __future__ import annotations

import types

import torch
from torch import nn

from ..modules.swin import FusedSwinAttention


def _fused_block_attn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Replaces timm's SwinTransformerBlock._attn (roll, pad, partition, attention, merge, crop, roll).
    return block.attn(x, shift_size=block.shift_size)


def patch_timm_swin(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Swap the attention path of every ``timm`` ``SwinTransformerBlock`` of ``model`` in place.

    Each block's ``attn`` becomes a ``FusedSwinAttention`` holding the same qkv/proj linears and
    bias table (same Parameter objects, same state dict keys), and the block's ``_attn`` (shift, pad,
    partition, attention, merge) calls it directly, in timm's order (shift, then pad). Call it after
    any ``set_input_size``. Returns ``model``. Raises ``ValueError`` for attention dropout > 0 and
    when no Swin block is found; ``ImportError`` without timm.
    """
    from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention

    patched = 0
    for block in model.modules():
        if not isinstance(block, SwinTransformerBlock):
            continue
        attn = block.attn
        if not isinstance(attn, WindowAttention):
            continue
        if attn.attn_drop.p != 0.0:
            raise ValueError(f"attention dropout {attn.attn_drop.p} is not fused; build the model with "
                             "attn_drop_rate=0")
        fused = FusedSwinAttention.from_module(attn, window_size=block.window_size, shift_size=block.shift_size,
                                               scale=attn.scale, shift_first=True, proj_drop=attn.proj_drop.p)
        fused.backend = backend
        block.attn = fused
        block._attn = types.MethodType(_fused_block_attn, block)
        patched += 1
    if patched == 0:
        raise ValueError(f"no timm SwinTransformerBlock with WindowAttention found in {type(model).__name__}")
    return model
