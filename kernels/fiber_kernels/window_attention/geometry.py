"""``WindowGeometry``: every value of one window-attention call that is not a tensor, computed once.

The Python twin of the C++ launch shape ``WaShape`` (``csrc/window_attention/window_attention_kernel.cuh``):
the map ``B x H x W`` with ``C`` channels per q/k/v, the heads, the window and shift, the padding order,
the scale and the shift-mask value, and what follows from them (padded map, windows, tokens per window,
table rows). The public op builds it once (``checks.check_window_attention``); the launchers, the work
buffers and the FLOP formulas read it; it is flattened to plain arguments only at the custom-op boundary
(``op_args`` / ``from_op_args``), since a ``torch.library`` schema takes no Python objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class WindowGeometry:
    """One call's geometry (fields as given) and its derived sizes (set in ``__post_init__``).

    ``window`` / ``shift`` are ``(h, w)``; ``shift_first`` False pads then shifts (Swin, FIBER,
    mmdetection, torchvision), True shifts then pads (timm). No checks here: build it from checked
    arguments (``checks.check_window_attention``) or compare it with the tensors (``checks.check_launch``).
    """

    batch: int
    height: int
    width: int
    channels: int  # C: channels of each of q, k, v (qkv has 3C)
    num_heads: int
    window: tuple[int, int]
    shift: tuple[int, int]
    scale: float
    mask_value: float
    shift_first: bool
    head_dim: int = field(init=False)
    tokens: int = field(init=False)  # N = Wh * Ww, tokens per window
    padded: tuple[int, int] = field(init=False)  # (Hp, Wp): the map padded to multiples of the window
    windows_per_row: int = field(init=False)  # nW_w = Wp / Ww
    windows_per_image: int = field(init=False)  # nW
    windows: int = field(init=False)  # B * nW
    table_rows: int = field(init=False)  # R = (2Wh - 1)(2Ww - 1)

    def __post_init__(self) -> None:
        wh, ww = self.window
        padded = (_cdiv(self.height, wh) * wh, _cdiv(self.width, ww) * ww)
        derived = {"head_dim": self.channels // self.num_heads, "tokens": wh * ww, "padded": padded,
                   "windows_per_row": padded[1] // ww, "windows_per_image": (padded[0] // wh) * (padded[1] // ww),
                   "table_rows": (2 * wh - 1) * (2 * ww - 1)}
        derived["windows"] = self.batch * derived["windows_per_image"]
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, qkv_shape: Sequence[int], num_heads: int, window: tuple[int, int], shift: tuple[int, int],
           scale: float, mask_value: float, shift_first: bool) -> WindowGeometry:
        """The geometry of qkv ``(B, H, W, 3C)`` with these settings."""
        batch, height, width, channels3 = qkv_shape
        return cls(batch, height, width, channels3 // 3, num_heads, tuple(window), tuple(shift), scale, mask_value,
                   shift_first)

    @classmethod
    def from_op_args(cls, qkv_shape: Sequence[int], num_heads: int, window_h: int, window_w: int, shift_h: int,
                     shift_w: int, scale: float, mask_value: float, shift_first: bool) -> WindowGeometry:
        """The inverse of :meth:`op_args`, inside a custom op (qkv ``(B, H, W, 3C)``)."""
        return cls.of(qkv_shape, num_heads, (window_h, window_w), (shift_h, shift_w), scale, mask_value, shift_first)

    def op_args(self) -> tuple[int, int, int, int, int, float, float, bool]:
        """The plain arguments of the ``fiber_kernels::window_attention`` ops after the tensors, in schema order:
        ``num_heads, window_h, window_w, shift_h, shift_w, scale, mask_value, shift_first``."""
        return (self.num_heads, *self.window, *self.shift, self.scale, self.mask_value, self.shift_first)

    @property
    def has_shift(self) -> bool:
        return any(self.shift)

    @property
    def qkv_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.height, self.width, 3 * self.channels)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """``(B, H, W, C)``: the output and its gradient."""
        return (self.batch, self.height, self.width, self.channels)

    @property
    def lse_shape(self) -> tuple[int, int, int]:
        """``(B·nW, nH, N)``: the row log-sum-exp the forward saves (fp32)."""
        return (self.windows, self.num_heads, self.tokens)

    @property
    def table_shape(self) -> tuple[int, int]:
        """``((2Wh-1)(2Ww-1), nH)``: the relative-position bias table."""
        return (self.table_rows, self.num_heads)
