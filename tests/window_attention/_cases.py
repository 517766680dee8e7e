"""The window-attention problems every backend's numerics tests run (``CASES``) and the input builder."""

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


# Every backend's numerics tests (Triton, the CUDA kernels under emulation) run all of these.
CASES = [
    Case(1, 7, 14, 3, 32, (7, 7), (0, 0)),             # window 7, multiples, no shift
    Case(1, 14, 14, 4, 32, (7, 7), (3, 3)),            # window 7, shifted, 4 windows
    Case(2, 5, 9, 3, 32, (7, 7), (3, 3)),              # not multiples: padded keys = qkv bias
    Case(1, 7, 7, 4, 32, (7, 7), (3, 3)),              # one window, shifted (detection variant)
    Case(1, 12, 12, 1, 32, (12, 12), (0, 0)),          # window 12, one window
    Case(1, 13, 12, 3, 32, (12, 12), (6, 6)),          # window 12, shifted, padded
    Case(1, 10, 12, 3, 32, (7, 7), (3, 3), bias=False),
    Case(1, 10, 12, 3, 32, (7, 7), (3, 3), shift_first=True),   # timm's order
    Case(1, 5, 8, 3, 32, (4, 6), (2, 0)),              # rectangular window, one-axis shift
    Case(1, 9, 10, 2, 16, (7, 7), (3, 3)),             # head dim 16
    Case(1, 8, 7, 2, 64, (7, 7), (3, 3)),              # head dim 64
]
# FIBER's stage-4 map at 800x1333 (25x42, window 12, shift 6: padded to 36x48, 12 windows) with FIBER's 4 heads,
# and with 1 head (FIBER_25X42_H1), which keeps the Triton interpreter cheap (~8 s per dtype).
FIBER_25X42 = Case(1, 25, 42, 4, 32, (12, 12), (6, 6))
FIBER_25X42_H1 = Case(1, 25, 42, 1, 32, (12, 12), (6, 6))
