"""Triton forward of fused Swin window attention and its launcher.

One program = one query tile of ``windows_per_program`` consecutive windows of one head. It reads
q, k, v straight from ``qkv (B, H, W, 3C)`` at the source positions of the shifted padded map
(padded keys/values = qkv bias), adds the relative-position bias (rows of ``dense_relative_bias``,
the table expanded once per call) and the in-kernel shift mask, runs an exact softmax over the
whole window (``BLOCK_N`` covers it), and writes ``out (B, H, W, C)`` at the original positions of
real tokens plus the row log-sum-exp ``(B·nW, nH, N)`` fp32 for the backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .geometry import WindowGeometry
from .triton_common import (
    WindowConfig,
    _channels,
    _image,
    _load_tokens,
    _relative_bias,
    _rows,
    _window_tokens,
    dense_relative_bias,
    dot_precision,
    is_aligned,
    pick_config,
)


@triton.jit
def _window_attention_fwd_kernel(
    qkv_ptr, rpb_ptr, bias_ptr, out_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qw, stride_ob, stride_oh, stride_ow,
    H, W, Hp, Wp, n_win, n_win_w, total_windows, windows_per_program, shift_h, shift_w, num_heads, C,
    scale, mask_value,
    WH: tl.constexpr, WW: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, HAS_SHIFT: tl.constexpr,
    HAS_QKV_BIAS: tl.constexpr, SHIFT_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    N: tl.constexpr = WH * WW
    pid_m = tl.program_id(0)
    first_window = tl.program_id(1).to(tl.int64) * windows_per_program
    head = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_chan = head * HEAD_DIM + offs_d
    k_chan = _channels(C + head * HEAD_DIM, offs_d, HEAD_DIM, ALIGNED)
    v_chan = _channels(2 * C + head * HEAD_DIM, offs_d, HEAD_DIM, ALIGNED)
    key_in_window = (offs_n < N)[None, :]
    fill_q = tl.zeros([HEAD_DIM], dtype=tl.float32)
    fill_k = fill_q
    fill_v = fill_q
    if HAS_QKV_BIAS:
        fill_q = tl.load(bias_ptr + q_chan).to(tl.float32)
        fill_k = tl.load(bias_ptr + k_chan).to(tl.float32)
        fill_v = tl.load(bias_ptr + v_chan).to(tl.float32)
    for i in range(windows_per_program):
        wid = first_window + i
        if wid < total_windows:
            b, py_m, px_m, real_m, region_m = _window_tokens(
                wid, offs_m, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w, WH, WW, SHIFT_FIRST)
            b, py_n, px_n, real_n, region_n = _window_tokens(
                wid, offs_n, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w, WH, WW, SHIFT_FIRST)
            image = qkv_ptr + _image(b, stride_qb, ALIGNED)
            q_tok = _rows(py_m, px_m, stride_qh, stride_qw, ALIGNED)
            q = _load_tokens(image, q_tok, real_m, offs_m < N, fill_q, q_chan, HAS_QKV_BIAS)
            tok_n = _rows(py_n, px_n, stride_qh, stride_qw, ALIGNED)
            k = _load_tokens(image, tok_n, real_n, offs_n < N, fill_k, k_chan, HAS_QKV_BIAS)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
            s += _relative_bias(rpb_ptr, head, offs_m, offs_n, N, BLOCK_N)
            if HAS_SHIFT:
                s += tl.where(region_m[:, None] != region_n[None, :], mask_value, 0.0)
            s = tl.where(key_in_window, s, float("-inf"))
            row_max = tl.max(s, axis=1)
            p = tl.exp(s - row_max[:, None])
            row_sum = tl.sum(p, axis=1)
            v = _load_tokens(image, tok_n, real_n, offs_n < N, fill_v, v_chan, HAS_QKV_BIAS)
            o = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION) / row_sum[:, None]
            out_image = out_ptr + _image(b, stride_ob, ALIGNED)
            out_tok = _rows(py_m, px_m, stride_oh, stride_ow, ALIGNED)
            tl.store(out_image + out_tok[:, None] + q_chan[None, :], o.to(out_ptr.dtype.element_ty),
                     mask=real_m[:, None])
            lse_row = lse_ptr + (wid * num_heads + head) * N
            tl.store(lse_row + offs_m, row_max + tl.log(row_sum), mask=offs_m < N)


def pick_windows_per_program(total_windows: int, programs_per_window: int, target_programs: int = 1024) -> int:
    """Windows one program loops over: the largest of 1, 2, 4, 8 that keeps ``target_programs``."""
    per_program = 1
    while per_program < 8 and -(-total_windows // (2 * per_program)) * programs_per_window >= target_programs:
        per_program *= 2
    return per_program


def window_attention_fwd(qkv: torch.Tensor, rpb_table: torch.Tensor, qkv_bias: torch.Tensor | None,
                         geometry: WindowGeometry, config: WindowConfig | None = None,
                         windows_per_prog: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward. qkv ``(B, H, W, 3C)`` (any strides; copied when the channel stride is not 1),
    rpb_table ``(R, nH)``, qkv_bias ``(3C,)`` or None (any stride; made contiguous); ``geometry`` theirs.
    Returns ``out (B, H, W, C)`` in qkv's dtype and ``lse (B·nW, nH, N)`` fp32."""
    g = geometry
    config = config or pick_config(g.tokens)
    qkv = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
    qkv_bias = qkv_bias.contiguous() if qkv_bias is not None else None  # (3C,): the kernel reads it densely
    rpb = dense_relative_bias(rpb_table, g.window, config.block_n)
    out = torch.empty(g.out_shape, device=qkv.device, dtype=qkv.dtype)
    lse = torch.empty(g.lse_shape, device=qkv.device, dtype=torch.float32)
    m_tiles = triton.cdiv(g.tokens, config.block_m)
    per_program = windows_per_prog or pick_windows_per_program(g.windows, m_tiles * g.num_heads)
    grid = (m_tiles, triton.cdiv(g.windows, per_program), g.num_heads)
    _window_attention_fwd_kernel[grid](
        qkv, rpb, qkv_bias if qkv_bias is not None else rpb, out, lse,
        qkv.stride(0), qkv.stride(1), qkv.stride(2), out.stride(0), out.stride(1), out.stride(2),
        g.height, g.width, *g.padded, g.windows_per_image, g.windows_per_row, g.windows, per_program, *g.shift,
        g.num_heads, g.channels, float(g.scale), float(g.mask_value),
        WH=g.window[0], WW=g.window[1], HEAD_DIM=g.head_dim, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        HAS_SHIFT=g.has_shift, HAS_QKV_BIAS=qkv_bias is not None,
        SHIFT_FIRST=g.shift_first, DOT_PRECISION=dot_precision(qkv.dtype),
        ALIGNED=is_aligned(g.channels, qkv, out), num_warps=config.fwd_warps, num_stages=config.num_stages,
    )
    return out, lse
