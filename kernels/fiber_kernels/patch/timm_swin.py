"""``patch_timm_swin(model)``: fused window attention in every block of a live timm Swin (V1)."""

from __future__ import annotations

import torch
from torch import nn

from ..window_attention.reference import relative_position_index
from ._swap import SwappedClass, swap_class
from ._swin_leaf import TraceableSwinAttention, refuse_swin_v2


class TimmFusedSwinAttention(TraceableSwinAttention):
    """The fused attention of a patched timm block, with timm's ``set_window_size`` (called by
    ``SwinTransformer.set_input_size``): the bias table is resized as timm resizes it."""

    def set_window_size(self, window_size: int | tuple[int, int]) -> None:
        """Resize ``relative_position_bias_table`` to ``window_size`` (timm's interpolation) and
        rebuild the index buffer; a new Parameter, as timm's own ``WindowAttention`` makes."""
        from timm.layers import resize_rel_pos_bias_table, to_2tuple

        window_size = tuple(to_2tuple(window_size))
        if window_size == self.window_size:
            return
        wh, ww = window_size
        table = self.relative_position_bias_table
        with torch.no_grad():
            resized = resize_rel_pos_bias_table(table, new_window_size=window_size,
                                                new_bias_shape=((2 * wh - 1) * (2 * ww - 1), self.num_heads),
                                                old_window_size=self.window_size)
        self.relative_position_bias_table = nn.Parameter(resized, requires_grad=table.requires_grad)
        persistent = "relative_position_index" not in self._non_persistent_buffers_set
        index = relative_position_index(wh, ww, device=table.device)
        self.register_buffer("relative_position_index", index, persistent=persistent)
        self.window_size = window_size


class _FusedTimmBlock(SwappedClass):
    """Mixed in before timm's ``SwinTransformerBlock``: ``_attn`` (shift, pad, partition, attention,
    merge, crop, unshift) is one fused call, with the block's current window and shift."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, H, W, C)`` normed tokens -> ``(B, H, W, C)``."""
        return self.attn(x, shift_size=self.shift_size)

    def get_attn_mask(self, *args: object, **kwargs: object) -> None:
        """The fused op builds the shift mask itself; timm's buffer is not needed (and would hold
        the size of the resolution before the next ``set_input_size``)."""
        return None


def _refuse_swin_v2(model: nn.Module) -> None:
    from timm.models import swin_transformer_v2, swin_transformer_v2_cr

    refuse_swin_v2(model, (swin_transformer_v2.SwinTransformerV2Block, swin_transformer_v2_cr.SwinTransformerV2CrBlock),
                   "a timm")


def patch_timm_swin(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Swap the attention path of every ``timm`` ``SwinTransformerBlock`` of ``model`` in place.

    Each block's ``attn`` becomes a ``TimmFusedSwinAttention`` (a ``FusedSwinAttention``) holding
    the same qkv/proj linears and bias table (same Parameter objects, same state dict keys), and the
    block's ``_attn`` calls it with the block's shift, in timm's order (shift, then pad). The model
    keeps working after ``model.set_input_size(...)`` (timm resizes the table; the fused op reads the
    new window and shift) and traces with ``torch.fx.symbolic_trace`` (the op is an FX leaf).
    Patching again re-sets ``backend``. Returns ``model``.

    Raises ``ValueError`` for Swin V2 (cosine attention and continuous position bias are not
    fused), attention dropout > 0, and when no Swin block is found; ``ImportError`` without timm.
    """
    from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention

    _refuse_swin_v2(model)
    blocks = [block for block in model.modules() if isinstance(block, SwinTransformerBlock)
              and isinstance(block.attn, (WindowAttention, TimmFusedSwinAttention))]
    if not blocks:
        raise ValueError(f"no timm SwinTransformerBlock with WindowAttention found in {type(model).__name__}")
    for block in blocks:
        if isinstance(block.attn, WindowAttention) and block.attn.attn_drop.p != 0.0:
            raise ValueError(f"attention dropout {block.attn.attn_drop.p} is not fused; build the model with "
                             "attn_drop_rate=0")
    for block in blocks:
        attn = block.attn
        if isinstance(attn, WindowAttention):
            attn = TimmFusedSwinAttention.from_module(attn, window_size=block.window_size,
                                                      shift_size=block.shift_size, scale=attn.scale, shift_first=True,
                                                      proj_drop=attn.proj_drop.p)
            block.attn = attn
        attn.backend = backend
        swap_class(block, _FusedTimmBlock)
        block.attn_mask = None
    return model
