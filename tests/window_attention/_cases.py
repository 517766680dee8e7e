"""Shared inputs for the window-attention tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fiber_kernels.window_attention.geometry import WindowGeometry


@dataclass(frozen=True)
class Case:
    """One window-attention problem: map ``B×H×W``, heads, head dim, window, shift."""

    B: int
    H: int
    W: int
    heads: int
    head_dim: int
    window: tuple[int, int]
    shift: tuple[int, int]
    bias: bool = True
    shift_first: bool = False

    def __str__(self) -> str:
        order = "-shiftfirst" if self.shift_first else ""
        return (f"B{self.B}-{self.H}x{self.W}-h{self.heads}-d{self.head_dim}-w{self.window[0]}x{self.window[1]}"
                f"-s{self.shift[0]}x{self.shift[1]}{'-bias' if self.bias else ''}{order}")

    def geometry(self, scale: float | None = None, mask_value: float = -100.0) -> WindowGeometry:
        """The launchers' ``WindowGeometry`` of this case (``scale`` defaults to ``head_dim ** -0.5``)."""
        qkv_shape = (self.B, self.H, self.W, 3 * self.heads * self.head_dim)
        scale = self.head_dim ** -0.5 if scale is None else scale
        return WindowGeometry.of(qkv_shape, self.heads, self.window, self.shift, scale, mask_value, self.shift_first)


def make_inputs(case: Case, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """qkv ``(B, H, W, 3C)``, table ``((2Wh-1)(2Ww-1), nH)`` and qkv bias ``(3C,)``, drawn in fp32 then cast."""
    C = case.heads * case.head_dim
    qkv = torch.randn(case.B, case.H, case.W, 3 * C)
    table = torch.randn((2 * case.window[0] - 1) * (2 * case.window[1] - 1), case.heads)
    bias = torch.randn(3 * C) if case.bias else None
    cast = (lambda t: None if t is None else t.to(dtype))
    return cast(qkv), cast(table), cast(bias)
