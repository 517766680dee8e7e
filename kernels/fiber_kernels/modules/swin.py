"""``FusedSwinAttention``: Swin's window attention over the whole ``(B, H, W, C)`` map in one op.

It replaces Swin's ``WindowAttention`` *and* the block-level pad / shift / partition / merge /
unshift / crop around it. Its state dict equals the official/timm ``WindowAttention``'s:
``qkv.{weight,bias}``, ``proj.{weight,bias}``, ``relative_position_bias_table`` and the
``relative_position_index`` buffer (kept for checkpoints; the kernel computes the index itself).
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import check_positive_int, check_scale
from ..window_attention import window_attention
from ..window_attention.checks import as_pair
from ..window_attention.reference import relative_position_index


def swin_stage_window(input_resolution: tuple[int, int], window_size: int, shift_size: int) -> tuple[int, int]:
    """The fixed-resolution Swin rule (official, timm, FIBER coarse): when ``min(H, W) <= window``
    the window becomes ``min(H, W)`` and the shift 0. Returns ``(window_size, shift_size)``."""
    if min(input_resolution) <= window_size:
        return min(input_resolution), 0
    return window_size, shift_size


class FusedSwinAttention(nn.Module):
    """Shifted-window multi-head self-attention with relative position bias, fused.

    Args:
        dim: channels C of the input ``(B, H, W, C)``.
        num_heads: heads; ``head_dim`` defaults to ``dim // num_heads``.
        window_size, shift_size: int or ``(h, w)`` of ints (a float is rejected); ``0 <= shift < window``.
        input_resolution: ``(H, W)`` of a fixed-resolution stage; when given, the Swin stage rule
            (``swin_stage_window``) sets window and shift.
        qkv_bias: a bias in the qkv linear (padded tokens hold it, as in Swin).
        qk_scale: overrides ``head_dim ** -0.5``; a finite float > 0 (0.0 is rejected, not defaulted).
        attn_drop: must be 0 (attention dropout is not fused; Swin/FIBER train with 0).
        proj_drop: dropout after the output projection.
        mask_value: added between shift regions (-100 as Swin/FIBER).
        shift_first: timm's order (shift, then pad) instead of Swin's (pad, then shift).
        no_shift_in_single_window: torchvision's rule: no shift along an axis that the (padded)
            map covers with one window.
        backend: ``window_attention``'s backend.

    Buffers: ``relative_position_index`` ``(Wh·Ww, Wh·Ww)`` int64 is registered *persistent*, as in
    the official Swin (``microsoft/Swin-Transformer``), so it is in ``state_dict()`` and official
    checkpoints load strictly. timm registers it non-persistent: loading a timm state dict reports
    it as the one missing key (``strict=False``), and the index this module computed is the same.
    ``from_module`` keeps the wrapped module's persistence (a patched timm model's state dict keeps
    timm's keys). The kernel recomputes the index itself; the buffer is for checkpoints only.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int | tuple[int, int] = 7,
                 shift_size: int | tuple[int, int] = 0, *, input_resolution: tuple[int, int] | None = None,
                 head_dim: int | None = None, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, mask_value: float = -100.0,
                 shift_first: bool = False, no_shift_in_single_window: bool = False, backend: str = "auto",
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if attn_drop != 0.0:
            raise ValueError(f"attn_drop must be 0: attention dropout is not fused, got {attn_drop}")
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        if head_dim is not None:
            check_positive_int("head_dim", head_dim)
        elif dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads (or head_dim given), got dim={dim}, "
                             f"num_heads={num_heads}")
        window_size = as_pair("window_size", window_size, 1)
        shift_size = as_pair("shift_size", shift_size, 0)
        if input_resolution is not None:
            if window_size[0] != window_size[1] or shift_size[0] != shift_size[1]:
                raise ValueError("input_resolution (the Swin stage rule) takes int window_size and shift_size, got "
                                 f"{window_size} and {shift_size}")
            window_size, shift_size = swin_stage_window(tuple(input_resolution), window_size[0], shift_size[0])
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = as_pair("window_size", window_size, 1)
        self.shift_size = as_pair("shift_size", shift_size, 0)
        head_dim = head_dim or dim // num_heads
        self.scale = head_dim ** -0.5 if qk_scale is None else check_scale(qk_scale, name="qk_scale")
        self.mask_value = mask_value
        self.shift_first = shift_first
        self.no_shift_in_single_window = no_shift_in_single_window
        self.backend = backend
        wh, ww = self.window_size
        factory = {"device": device, "dtype": dtype}
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias, **factory)
        self.proj = nn.Linear(num_heads * head_dim, dim, **factory)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads,
                                                                     **factory))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(wh, ww, device=device))

    @classmethod
    def from_module(cls, attn: nn.Module, *, window_size: int | tuple[int, int],
                    shift_size: int | tuple[int, int], scale: float, shift_first: bool = False,
                    no_shift_in_single_window: bool = False, proj_drop: float = 0.0) -> FusedSwinAttention:
        """Wrap the ``qkv``/``proj`` linears, table and index buffer of a Swin attention module
        (the same Parameter objects: optimizers and tied weights keep working)."""
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.num_heads = attn.relative_position_bias_table.shape[1]
        fused.dim = attn.proj.out_features
        fused.window_size = as_pair("window_size", window_size, 1)
        fused.shift_size = as_pair("shift_size", shift_size, 0)
        fused.scale = float(scale)
        fused.mask_value = -100.0
        fused.shift_first = shift_first
        fused.no_shift_in_single_window = no_shift_in_single_window
        fused.backend = "auto"
        fused.qkv = attn.qkv
        fused.proj = attn.proj
        fused.proj_drop = nn.Dropout(proj_drop)
        fused.relative_position_bias_table = attn.relative_position_bias_table
        persistent = "relative_position_index" not in attn._non_persistent_buffers_set
        fused.register_buffer("relative_position_index", attn.relative_position_index, persistent=persistent)
        return fused

    def _shift_for(self, H: int, W: int, shift_size: tuple[int, int]) -> tuple[int, int]:
        if not self.no_shift_in_single_window:
            return shift_size
        wh, ww = self.window_size
        padded_h, padded_w = -(-H // wh) * wh, -(-W // ww) * ww
        return (0 if wh >= padded_h else shift_size[0], 0 if ww >= padded_w else shift_size[1])

    def forward(self, x: torch.Tensor, shift_size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """x ``(B, H, W, C)`` (normed tokens, unpadded) → ``(B, H, W, C)``; ``shift_size`` overrides
        the module's (timm blocks own their shift)."""
        shift = as_pair("shift_size", shift_size, 0) if shift_size is not None else self.shift_size
        qkv = self.qkv(x)
        bias = self.qkv.bias.to(qkv.dtype) if self.qkv.bias is not None else None
        out = window_attention(qkv, self.relative_position_bias_table.to(qkv.dtype), self.num_heads,
                               self.window_size, self._shift_for(x.shape[1], x.shape[2], shift), scale=self.scale,
                               qkv_bias=bias, mask_value=self.mask_value, shift_first=self.shift_first,
                               backend=self.backend)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
                f"shift_size={self.shift_size}, shift_first={self.shift_first}")
