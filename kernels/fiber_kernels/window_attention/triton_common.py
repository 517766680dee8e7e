"""Shared pieces of the Triton window-attention kernels: token addressing, bias gather, configs.

Addressing: window ``wid`` of ``B·nW`` windows, in-window position ``t = ty·Ww + tx``. Its
coordinates in the shifted padded map are ``(sy, sx) = (wrow·Wh + ty, wcol·Ww + tx)``; the token it
reads in the original ``(B, H, W, ·)`` map is ``((sy + shift_h) mod Hp, (sx + shift_w) mod Wp)``
(pad first, Swin/FIBER/torchvision) or, with ``SHIFT_FIRST``, ``(sy, sx)`` must lie inside ``H×W``
and the source is taken mod ``(H, W)`` (timm). A position outside ``H×W`` is a padded token: its
k and v are the qkv bias, its query output is dropped. The shift-mask region of a position is
``3·rh + rw`` with ``rh = [sy >= Hp-Wh] + [sy >= Hp-shift_h]`` (Swin's three slices per axis).
The relative-position bias comes from ``dense_relative_bias``.

Tiles and "several windows per program". A program's key tile always covers a whole window
(``BLOCK_N`` >= N), so the softmax is exact in one pass and dq needs no cross-program sum. Useful
fraction of the S tile: N = 49 in 64x64 (forward) -> 59%; N = 144 in nine 16x256 tiles -> 56% (no
padded query rows). Packing g windows block-diagonally into one MMA tile would *lower* this to
1/g of the packed tile (two 49-token windows in 128x128: 29%), since queries of one window must not
see keys of the other, so it is not done. What several windows per program buy instead: the
forward and dk/dv programs loop over up to 8 consecutive windows (``pick_windows_per_program``)
once the grid has >= 1024 programs, and each dq program loops over a whole split of windows,
accumulating the table gradient in registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..dispatch import BackendLimits, DeviceInfo, triton_dtype_reasons
from .geometry import WindowGeometry
from .reference import relative_position_index


@dataclass(frozen=True)
class WindowConfig:
    """Tile config: ``block_n`` covers every token of a window; ``block_m`` is the forward's query
    tile, ``bwd_block_m`` the backward's query (dq programs) and key (dk/dv programs) tile."""

    block_n: int
    block_m: int
    bwd_block_m: int
    fwd_warps: int
    bwd_warps: int
    num_stages: int = 1


# Keyed by max tokens per window. 64: windows up to 8x8 (Swin's 7x7 = 49 tokens: one 64x64 tile
# forward, 16-row tiles backward); 256: windows up to 16x16 (FIBER's 12x12 = 144 tokens: nine
# 16-row tiles, no padded rows, each against all 256 keys). Larger tiles spill (ahead-of-time
# compile, tests/window_attention/test_compile.py); 16-row tiles are below wgmma's 64-row minimum, so
# sm90 runs them with mma.sync.
CONFIGS: tuple[WindowConfig, ...] = (
    WindowConfig(block_n=64, block_m=64, bwd_block_m=16, fwd_warps=4, bwd_warps=4),
    WindowConfig(block_n=256, block_m=16, bwd_block_m=16, fwd_warps=4, bwd_warps=8),
)
MAX_WINDOW_TOKENS = CONFIGS[-1].block_n

# What the kernels take (the interpreter runs every declared head dim and dtype) and what the compiled
# kernels run on sm80/sm90 without spilling, from ahead-of-time compiles of every variant
# (tests/window_attention/test_compile.py prints them): fp16/bf16 at head dim 32 are spill-free for every
# window compiled (4x4 to 16x16); other head dims spill in some windows, and fp32 inputs take exact fp32
# FMA math (``DOT_PRECISION="ieee"``, no tensor cores), which spills in every config. The torch backend
# (SDPA) serves those on GPUs.
LIMITS = BackendLimits(head_dims=(16, 32, 64, 128), max_window_tokens=MAX_WINDOW_TOKENS, min_capability=(8, 0),
                       gpu_dtypes=(torch.float16, torch.bfloat16), gpu_head_dims=(32,))


def reasons(device: DeviceInfo, qkv: torch.Tensor, geometry: WindowGeometry, **_: object) -> list[str]:
    """Why the Triton kernels cannot take qkv ``(B, H, W, 3C)`` of this ``geometry`` on ``device`` (the dispatch
    reasons, read from ``LIMITS``; empty when they can)."""
    found = LIMITS.head_dim_reasons(geometry.head_dim, "head dim C/num_heads") + LIMITS.window_reasons(geometry.tokens)
    if device.type == "cuda":
        found += LIMITS.capability_reasons(device) + _gpu_reasons(qkv.dtype, geometry.head_dim)
    return found + triton_dtype_reasons(device, qkv.dtype)


def _gpu_reasons(dtype: torch.dtype, head_dim: int) -> list[str]:
    """What the compiled kernels decline on a GPU (``LIMITS.gpu_dtypes`` / ``gpu_head_dims``)."""
    found = []
    if dtype not in LIMITS.gpu_dtypes:
        found.append(f"{dtype} inputs need exact fp32 FMA math, which spills in every tile config on sm80/sm90; "
                     "the GPU kernels take float16 or bfloat16")
    if head_dim in LIMITS.head_dims and head_dim not in LIMITS.gpu_head_dims:
        found.append(f"head dim {head_dim} spills to local memory on sm80/sm90; the GPU kernels take head dim "
                     f"C/num_heads in {LIMITS.gpu_head_dims}")
    return found


def pick_config(window_tokens: int) -> WindowConfig:
    """The smallest config whose ``block_n`` holds ``window_tokens`` tokens."""
    for config in CONFIGS:
        if window_tokens <= config.block_n:
            return config
    raise ValueError(f"window of {window_tokens} tokens exceeds the largest tile ({MAX_WINDOW_TOKENS})")


def dot_precision(dtype: torch.dtype) -> str:
    """``DOT_PRECISION`` of the kernels for inputs of ``dtype``: exact ``"ieee"`` for fp32 (the
    interpreter's reference-grade path; GPUs decline fp32, see ``LIMITS.gpu_dtypes``), else
    ``"tf32"`` (ignored by fp16/bf16 dots, which run on tensor cores)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def dense_relative_bias(rpb_table: torch.Tensor, window: tuple[int, int], block_n: int,
                        transpose: bool = False) -> torch.Tensor:
    """``rpb_table[relative index]`` per head as ``(nH, N, block_n)`` (rows padded to ``block_n``);
    ``transpose`` gives ``[head, key, query]`` for the dk/dv programs.

    Built once per call and shared by every window of the batch (at FIBER stage 3: 16·144·256·2 B =
    1.2 MB in bf16). A per-element gather from the table inside the kernel needs one 64-bit address
    per bias element per thread (~100 registers at a 64x64 tile) and spilled; rows of this tensor
    load as aligned vectors. Its gradient is the per-(query, key) sum the backward already forms.
    """
    N = window[0] * window[1]
    index = relative_position_index(*window, device=rpb_table.device)
    dense = rpb_table.t()[:, index.t() if transpose else index]  # (nH, N, N)
    return torch.nn.functional.pad(dense, (0, block_n - N)).contiguous()


@triton.jit
def _window_tokens(wid, t, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w,
                   WH: tl.constexpr, WW: tl.constexpr, SHIFT_FIRST: tl.constexpr):
    """For positions ``t`` (int32) of window ``wid`` (int64): (batch as int64 scalar, source row,
    source col, is a real token, shift region), the vectors in int32 (offsets within one image)."""
    b = wid // n_win
    w_in = (wid - b * n_win).to(tl.int32)
    sy = (w_in // n_win_w) * WH + t // WW
    sx = (w_in % n_win_w) * WW + t % WW
    if SHIFT_FIRST:
        real = (sy < H) & (sx < W)
        py = (sy + shift_h) % H
        px = (sx + shift_w) % W
    else:
        py = (sy + shift_h) % Hp
        px = (sx + shift_w) % Wp
        real = (py < H) & (px < W)
    real = real & (t < WH * WW)
    rh = (sy >= Hp - WH).to(tl.int32) + (sy >= Hp - shift_h).to(tl.int32)
    rw = (sx >= Wp - WW).to(tl.int32) + (sx >= Wp - shift_w).to(tl.int32)
    return b, py, px, real, rh * 3 + rw


@triton.jit
def _relative_bias(rpb_ptr, head, rows, cols, N: tl.constexpr, BLOCK_N: tl.constexpr):
    """Rows ``rows`` x cols ``cols`` of head ``head`` of the dense bias ``(nH, N, BLOCK_N)`` as fp32;
    0 outside the window. Rows are ``BLOCK_N``-aligned, so the loads are vectorised."""
    inside = (rows < N)[:, None] & (cols < N)[None, :]
    tile = rpb_ptr + head * (N * BLOCK_N) + rows[:, None] * BLOCK_N + cols[None, :]
    return tl.load(tile, mask=inside, other=0.0).to(tl.float32)


@triton.jit
def _rows(py, px, stride_h, stride_w, ALIGNED: tl.constexpr):
    """Element offsets of tokens ``(py, px)`` in one image; with ``ALIGNED`` (every stride and C a
    multiple of 16, checked by the launcher) the hint that makes row loads 16-byte vectors."""
    tok = py * stride_h + px * stride_w
    if ALIGNED:
        tok = tl.multiple_of(tok, 16)
    return tok


@triton.jit
def _image(b, stride_b, ALIGNED: tl.constexpr):
    """Element offset of image ``b`` (int64), 16-aligned with ``ALIGNED``."""
    offset = b * stride_b
    if ALIGNED:
        offset = tl.multiple_of(offset, 16)
    return offset


@triton.jit
def _channels(start, offs_d, HEAD_DIM: tl.constexpr, ALIGNED: tl.constexpr):
    """Channels ``start + [0, HEAD_DIM)`` of one head; contiguous, 16-aligned with ``ALIGNED``."""
    chan = start + offs_d
    if ALIGNED:
        chan = tl.max_contiguous(tl.multiple_of(chan, 16), HEAD_DIM)
    return chan


def is_aligned(C: int, *tensors: torch.Tensor) -> bool:
    """``ALIGNED`` of the kernels: C and the row/batch strides of every tensor are multiples of 16."""
    return C % 16 == 0 and all(stride % 16 == 0 for t in tensors for stride in t.stride()[:-1])


@triton.jit
def _load_tokens(image_ptr, tok, real, in_window, fill, chan, HAS_FILL: tl.constexpr):
    """Rows ``tok`` (int32 offsets in one image) at channels ``chan``. Padded tokens (``in_window`` but
    not ``real``) get ``fill`` with ``HAS_FILL``; every other non-real row, the lanes past the window
    included, gets 0, so a NaN or inf in ``fill`` reaches only the padded tokens that hold it (lanes past
    the window meet zero probabilities, and 0 * NaN would poison the whole tile)."""
    x = tl.load(image_ptr + tok[:, None] + chan[None, :], mask=real[:, None], other=0.0)
    if HAS_FILL:
        padded = in_window & (real == 0)
        x = tl.where(padded[:, None], fill[None, :].to(x.dtype), x)
    return x
