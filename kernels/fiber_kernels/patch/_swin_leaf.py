"""What the Swin patchers share: their one call into ``window_attention``, registered as a ``torch.fx``
leaf, and the refusal of Swin V2 models.

``torch.fx.symbolic_trace`` cannot trace through ``window_attention`` (its argument checks and
the padded-size / single-window rules read tensor shapes as Python ints), so
``swin_window_attention`` is ``torch.fx.wrap``-ed: a traced patched model holds one
``call_function`` node per Swin block. Callers must look it up on this module
(``_swin_leaf.swin_window_attention``) for the tracer to see the wrapped name.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..modules.swin import FusedSwinAttention
from ..window_attention import window_attention


@torch.fx.wrap
def swin_window_attention(x: torch.Tensor, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor | None,
                          table: torch.Tensor, num_heads: int, window: tuple[int, int], shift: tuple[int, int],
                          scale: float, shift_first: bool = False, no_shift_in_single_window: bool = False,
                          mask_value: float = -100.0, backend: str = "auto") -> torch.Tensor:
    """x ``(B, H, W, C)`` normed, unpadded tokens -> ``(B, H, W, C')``: window attention before the
    output projection. ``qkv_weight`` ``(3C', C)``, ``qkv_bias`` ``(3C',)`` or None, ``table``
    ``((2Wh-1)(2Ww-1), num_heads)``; the other arguments are ``window_attention``'s.
    ``no_shift_in_single_window``: torchvision's rule, no shift along an axis the padded map
    covers with one window."""
    qkv = F.linear(x, qkv_weight, qkv_bias)
    if no_shift_in_single_window:
        sizes = x.shape[1:3]
        shift = tuple(0 if w >= -(-size // w) * w else s for size, w, s in zip(sizes, window, shift, strict=True))
    return window_attention(qkv, table.to(qkv.dtype), num_heads, tuple(window), tuple(shift), scale=scale,
                            qkv_bias=None if qkv_bias is None else qkv_bias.to(qkv.dtype),
                            mask_value=mask_value, shift_first=shift_first, backend=backend)


class TraceableSwinAttention(FusedSwinAttention):
    """``FusedSwinAttention`` whose forward goes through the FX leaf ``swin_window_attention``
    (same state, same result: ``from_module`` builds it exactly as its parent)."""

    def forward(self, x: torch.Tensor, shift_size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """x ``(B, H, W, C)`` (normed tokens, unpadded) → ``(B, H, W, C)``; ``shift_size`` overrides the module's."""
        shift = self.shift_size if shift_size is None else shift_size
        shift = tuple(shift) if isinstance(shift, (tuple, list)) else (shift, shift)
        out = swin_window_attention(x, self.qkv.weight, self.qkv.bias, self.relative_position_bias_table,
                                    self.num_heads, self.window_size, shift, self.scale, self.shift_first,
                                    self.no_shift_in_single_window, self.mask_value, self.backend)
        return self.proj_drop(self.proj(out))


def refuse_swin_v2(model: nn.Module, v2_classes: tuple[type, ...], library: str) -> None:
    """``ValueError`` when ``model`` holds a Swin V2 block (an instance of ``v2_classes``): its attention is not
    what the fused kernel computes. ``library`` names whose V2 it is, with its article (``"a timm"``, ``"an HF"``)."""
    if any(isinstance(module, v2_classes) for module in model.modules()):
        raise ValueError(f"{type(model).__name__} is {library} Swin V2: its scaled cosine attention (a learned "
                         "logit scale on cosine similarities) and continuous position bias (an MLP over log-spaced "
                         "coordinates) are not what the fused kernel computes (scaled dot product + a learned "
                         "bias table); run it unpatched")
