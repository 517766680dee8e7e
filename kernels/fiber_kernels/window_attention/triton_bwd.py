"""Triton backward of fused Swin window attention and its launcher.

``_window_attention_bwd_delta_kernel`` first forms ``delta = rowsum(dout·out)`` per token and head
(fp32, ``(B, H, W, nH)``). Then one launch of ``_window_attention_bwd_kernel`` runs two kinds of
program, told apart by program id:

* dq programs ``(split, head, query tile)``: each loops over a fixed contiguous range of windows
  (a "split"), recomputes ``P = exp(S - lse)`` for its query rows against every key of the window,
  writes dq, and accumulates ``dS`` over its windows *in registers*; at the end it stores that sum
  once into a partial buffer ``(num_splits, nH, N, N)`` fp32.
* dk/dv programs ``(window chunk, head, key tile)``: recompute the key tile against every query of
  the window, in the transposed orientation (rows = keys, so no register transposes), and write dk
  and dv (complete: the tile sees all queries). Padded keys
  (k, v = qkv bias) have no position to write; their dk and dv are summed per program into a small
  ``(programs, 2, C)`` buffer, the gradient of the k/v parts of ``qkv_bias``.

``_window_attention_table_grad_kernel`` then folds the partials into the ``(R, nH)`` table: for each
relative offset it sums the splits in order and the (query, key) pairs of that offset in order.

Determinism: no atomics anywhere; every sum has a fixed order (windows within a split, splits,
pairs), and ``num_splits`` depends only on the shape, so two runs give bitwise equal gradients.
Cost of this choice: ``S`` and ``dP`` are computed twice (once per program kind: 7 tile matmuls per
window instead of 5), and the partial buffer is ``num_splits·nH·N²·4`` bytes, with ``num_splits``
chosen so that about ``TARGET_DQ_PROGRAMS`` dq programs exist (2.65 MB at N = 144, 16-row tiles,
for every Swin-B stage and batch; the attention-gradient tensor of coarse stage 1 would be 170 MB).
``(windows, heads, N, N)`` is never materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..work_buffers import WorkBuffer
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
from .triton_fwd import pick_windows_per_program

TARGET_DQ_PROGRAMS = 256


@triton.jit
def _window_attention_bwd_delta_kernel(out_ptr, dout_ptr, delta_ptr, n_tokens, num_heads, C,
                                       HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr):
    """``delta[token, head] = sum_d dout·out`` in fp32 for contiguous ``(B·H·W, C)`` out and dout."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    head = tl.program_id(1)
    chan = head * HEAD_DIM + tl.arange(0, HEAD_DIM)
    inside = (rows < n_tokens)[:, None]
    o = tl.load(out_ptr + rows[:, None] * C + chan[None, :], mask=inside, other=0.0).to(tl.float32)
    do = tl.load(dout_ptr + rows[:, None] * C + chan[None, :], mask=inside, other=0.0).to(tl.float32)
    tl.store(delta_ptr + rows * num_heads + head, tl.sum(o * do, axis=1), mask=rows < n_tokens)


@triton.jit
def _bwd_dq_program(
    pid, qkv_ptr, rpb_ptr, bias_ptr, dout_ptr, delta_ptr, lse_ptr, dqkv_ptr, ds_part_ptr,
    stride_qb, stride_qh, stride_qw, stride_ob, stride_oh, stride_ow, stride_gb, stride_gh, stride_gw,
    H, W, Hp, Wp, n_win, n_win_w, total_windows, windows_per_split, shift_h, shift_w, num_heads, C,
    scale, mask_value,
    WH: tl.constexpr, WW: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SHIFT: tl.constexpr, HAS_QKV_BIAS: tl.constexpr, SHIFT_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    N: tl.constexpr = WH * WW
    M_TILES: tl.constexpr = (N + BLOCK_M - 1) // BLOCK_M
    tile = (pid % M_TILES).to(tl.int32)
    head = ((pid // M_TILES) % num_heads).to(tl.int32)
    split = pid // M_TILES // num_heads
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_chan = head * HEAD_DIM + offs_d
    k_chan = _channels(C + head * HEAD_DIM, offs_d, HEAD_DIM, ALIGNED)
    v_chan = _channels(2 * C + head * HEAD_DIM, offs_d, HEAD_DIM, ALIGNED)
    key_in_window = (offs_n < N)[None, :]
    fill_k = tl.zeros([HEAD_DIM], dtype=tl.float32)
    fill_v = fill_k
    if HAS_QKV_BIAS:
        fill_k = tl.load(bias_ptr + k_chan).to(tl.float32)
        fill_v = tl.load(bias_ptr + v_chan).to(tl.float32)
    ds_sum = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    first = split * windows_per_split
    last = tl.minimum(first + windows_per_split, total_windows)
    for wid in range(first, last):
        b, py_m, px_m, real_m, region_m = _window_tokens(
            wid, offs_m, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w, WH, WW, SHIFT_FIRST)
        b, py_n, px_n, real_n, region_n = _window_tokens(
            wid, offs_n, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w, WH, WW, SHIFT_FIRST)
        image = qkv_ptr + _image(b, stride_qb, ALIGNED)
        q = _load_tokens(image, _rows(py_m, px_m, stride_qh, stride_qw, ALIGNED), real_m, real_m, fill_k, q_chan,
                         False)
        tok_n = _rows(py_n, px_n, stride_qh, stride_qw, ALIGNED)
        k = _load_tokens(image, tok_n, real_n, offs_n < N, fill_k, k_chan, HAS_QKV_BIAS)
        lse = tl.load(lse_ptr + (wid * num_heads + head) * N + offs_m, mask=real_m, other=float("inf"))
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
        s += _relative_bias(rpb_ptr, head, offs_m, offs_n, N, BLOCK_N)
        if HAS_SHIFT:
            s += tl.where(region_m[:, None] != region_n[None, :], mask_value, 0.0)
        p = tl.exp(tl.where(key_in_window, s, float("-inf")) - lse[:, None])
        out_tok = _rows(py_m, px_m, stride_oh, stride_ow, ALIGNED)
        do = _load_tokens(dout_ptr + _image(b, stride_ob, ALIGNED), out_tok, real_m, real_m, fill_k, q_chan, False)
        v = _load_tokens(image, tok_n, real_n, offs_n < N, fill_v, v_chan, HAS_QKV_BIAS)
        delta = tl.load(delta_ptr + b * H * W * num_heads + (py_m * W + px_m) * num_heads + head, mask=real_m,
                        other=0.0)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION) - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION) * scale
        grad_image = dqkv_ptr + _image(b, stride_gb, ALIGNED)
        grad_tok = _rows(py_m, px_m, stride_gh, stride_gw, ALIGNED)
        tl.store(grad_image + grad_tok[:, None] + q_chan[None, :], dq.to(dqkv_ptr.dtype.element_ty),
                 mask=real_m[:, None])
        ds_sum += ds
    part = ds_part_ptr + (split * num_heads + head) * N * N
    tl.store(part + offs_m[:, None] * N + offs_n[None, :], ds_sum, mask=(offs_m < N)[:, None] & key_in_window)


@triton.jit
def _bwd_dkv_program(
    pid, qkv_ptr, rpbt_ptr, bias_ptr, dout_ptr, delta_ptr, lse_ptr, dqkv_ptr, dbias_part_ptr,
    stride_qb, stride_qh, stride_qw, stride_ob, stride_oh, stride_ow, stride_gb, stride_gh, stride_gw,
    H, W, Hp, Wp, n_win, n_win_w, total_windows, windows_per_program, shift_h, shift_w, num_heads, C,
    scale, mask_value,
    WH: tl.constexpr, WW: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SHIFT: tl.constexpr, HAS_QKV_BIAS: tl.constexpr, SHIFT_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    # Transposed orientation (rows = this tile's keys j, columns = all queries i): no register transposes.
    N: tl.constexpr = WH * WW
    M_TILES: tl.constexpr = (N + BLOCK_M - 1) // BLOCK_M
    tile = (pid % M_TILES).to(tl.int32)
    head = ((pid // M_TILES) % num_heads).to(tl.int32)
    chunk = pid // M_TILES // num_heads
    offs_i = tl.arange(0, BLOCK_N)
    offs_j = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_chan = head * HEAD_DIM + offs_d
    k_chan = _channels(C + head * HEAD_DIM, offs_d, HEAD_DIM, ALIGNED)
    v_chan = _channels(2 * C + head * HEAD_DIM, offs_d, HEAD_DIM, ALIGNED)
    key_in_window = (offs_j < N)[:, None]
    fill_k = tl.zeros([HEAD_DIM], dtype=tl.float32)
    fill_v = fill_k
    if HAS_QKV_BIAS:
        fill_k = tl.load(bias_ptr + k_chan).to(tl.float32)
        fill_v = tl.load(bias_ptr + v_chan).to(tl.float32)
    dbias_k = tl.zeros([HEAD_DIM], dtype=tl.float32)
    dbias_v = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for w in range(windows_per_program):
        wid = chunk * windows_per_program + w
        if wid < total_windows:
            b, py_i, px_i, real_i, region_i = _window_tokens(
                wid, offs_i, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w, WH, WW, SHIFT_FIRST)
            b, py_j, px_j, real_j, region_j = _window_tokens(
                wid, offs_j, H, W, Hp, Wp, n_win, n_win_w, shift_h, shift_w, WH, WW, SHIFT_FIRST)
            image = qkv_ptr + _image(b, stride_qb, ALIGNED)
            tok_j = _rows(py_j, px_j, stride_qh, stride_qw, ALIGNED)
            k = _load_tokens(image, tok_j, real_j, offs_j < N, fill_k, k_chan, HAS_QKV_BIAS)
            q = _load_tokens(image, _rows(py_i, px_i, stride_qh, stride_qw, ALIGNED), real_i, real_i, fill_k, q_chan,
                             False)
            lse = tl.load(lse_ptr + (wid * num_heads + head) * N + offs_i, mask=real_i, other=float("inf"))
            st = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * scale
            st += _relative_bias(rpbt_ptr, head, offs_j, offs_i, N, BLOCK_N)
            if HAS_SHIFT:
                st += tl.where(region_j[:, None] != region_i[None, :], mask_value, 0.0)
            pt = tl.exp(tl.where(key_in_window, st, float("-inf")) - lse[None, :])
            out_tok = _rows(py_i, px_i, stride_oh, stride_ow, ALIGNED)
            do = _load_tokens(dout_ptr + _image(b, stride_ob, ALIGNED), out_tok, real_i, real_i, fill_k, q_chan,
                              False)
            dv = tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)
            v = _load_tokens(image, tok_j, real_j, offs_j < N, fill_v, v_chan, HAS_QKV_BIAS)
            delta = tl.load(delta_ptr + b * H * W * num_heads + (py_i * W + px_i) * num_heads + head, mask=real_i,
                            other=0.0)
            dst = pt * (tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION) - delta[None, :])
            dk = tl.dot(dst.to(q.dtype), q, input_precision=DOT_PRECISION) * scale
            grad_image = dqkv_ptr + _image(b, stride_gb, ALIGNED)
            grad_tok = _rows(py_j, px_j, stride_gh, stride_gw, ALIGNED)
            tl.store(grad_image + grad_tok[:, None] + k_chan[None, :], dk.to(dqkv_ptr.dtype.element_ty),
                     mask=real_j[:, None])
            tl.store(grad_image + grad_tok[:, None] + v_chan[None, :], dv.to(dqkv_ptr.dtype.element_ty),
                     mask=real_j[:, None])
            if HAS_QKV_BIAS:
                padded = ((offs_j < N) & (real_j == 0))[:, None]
                dbias_k += tl.sum(tl.where(padded, dk, 0.0), axis=0)
                dbias_v += tl.sum(tl.where(padded, dv, 0.0), axis=0)
    if HAS_QKV_BIAS:
        part = dbias_part_ptr + (chunk * M_TILES + tile) * 2 * C
        tl.store(part + q_chan, dbias_k)
        tl.store(part + C + q_chan, dbias_v)


@triton.jit
def _window_attention_bwd_kernel(
    qkv_ptr, rpb_ptr, rpbt_ptr, bias_ptr, dout_ptr, delta_ptr, lse_ptr, dqkv_ptr, ds_part_ptr, dbias_part_ptr,
    stride_qb, stride_qh, stride_qw, stride_ob, stride_oh, stride_ow, stride_gb, stride_gh, stride_gw,
    H, W, Hp, Wp, n_win, n_win_w, total_windows, windows_per_split, num_dq_programs, windows_per_program,
    shift_h, shift_w, num_heads, C, scale, mask_value,
    WH: tl.constexpr, WW: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SHIFT: tl.constexpr, HAS_QKV_BIAS: tl.constexpr, SHIFT_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    if pid < num_dq_programs:
        _bwd_dq_program(
            pid, qkv_ptr, rpb_ptr, bias_ptr, dout_ptr, delta_ptr, lse_ptr, dqkv_ptr, ds_part_ptr,
            stride_qb, stride_qh, stride_qw, stride_ob, stride_oh, stride_ow, stride_gb, stride_gh, stride_gw,
            H, W, Hp, Wp, n_win, n_win_w, total_windows, windows_per_split, shift_h, shift_w, num_heads, C,
            scale, mask_value, WH, WW, HEAD_DIM, BLOCK_M, BLOCK_N, HAS_SHIFT, HAS_QKV_BIAS, SHIFT_FIRST,
            DOT_PRECISION, ALIGNED)
    else:
        _bwd_dkv_program(
            pid - num_dq_programs, qkv_ptr, rpbt_ptr, bias_ptr, dout_ptr, delta_ptr, lse_ptr, dqkv_ptr,
            dbias_part_ptr,
            stride_qb, stride_qh, stride_qw, stride_ob, stride_oh, stride_ow, stride_gb, stride_gh, stride_gw,
            H, W, Hp, Wp, n_win, n_win_w, total_windows, windows_per_program, shift_h, shift_w, num_heads, C,
            scale, mask_value, WH, WW, HEAD_DIM, BLOCK_M, BLOCK_N, HAS_SHIFT, HAS_QKV_BIAS, SHIFT_FIRST,
            DOT_PRECISION, ALIGNED)


@triton.jit
def _window_attention_table_grad_kernel(ds_part_ptr, dtable_ptr, num_splits, num_heads, window_tokens,
                                        WH: tl.constexpr, WW: tl.constexpr, BLOCK_R: tl.constexpr):
    N: tl.constexpr = WH * WW
    R: tl.constexpr = (2 * WH - 1) * (2 * WW - 1)
    head = tl.program_id(0)
    r = tl.arange(0, BLOCK_R)
    dy = r // (2 * WW - 1) - (WH - 1)
    dx = r % (2 * WW - 1) - (WW - 1)
    acc = tl.zeros([BLOCK_R], dtype=tl.float32)
    for split in range(num_splits):
        base = ds_part_ptr + (split * num_heads + head).to(tl.int64) * N * N
        for i in range(window_tokens):  # runtime bound: a constexpr one gets unrolled into spills
            yj = i // WW - dy
            xj = i % WW - dx
            pair = (r < R) & (yj >= 0) & (yj < WH) & (xj >= 0) & (xj < WW)
            acc += tl.load(base + i * N + yj * WW + xj, mask=pair, other=0.0)
    tl.store(dtable_ptr + r * num_heads + head, acc, mask=r < R)


def num_splits_for(total_windows: int, num_heads: int, m_tiles: int) -> tuple[int, int]:
    """``(num_splits, windows_per_split)`` of the dq programs; a function of the shape only."""
    wanted = max(1, min(total_windows, triton.cdiv(TARGET_DQ_PROGRAMS, num_heads * m_tiles)))
    per_split = triton.cdiv(total_windows, wanted)
    return triton.cdiv(total_windows, per_split), per_split


@dataclass(frozen=True)
class BackwardPlan:
    """Grid of one backward launch and the work buffers it allocates besides its outputs; a function
    of the shape only (``backward_plan``)."""

    config: WindowConfig
    m_tiles: int
    num_splits: int
    windows_per_split: int
    windows_per_program: int
    chunks: int
    buffers: tuple[WorkBuffer, ...]

    def buffer(self, name: str) -> WorkBuffer:
        """The work buffer called ``name`` (``KeyError`` when this plan has none)."""
        for buffer in self.buffers:
            if buffer.name == name:
                return buffer
        raise KeyError(f"no work buffer {name!r} in this plan; it has {[b.name for b in self.buffers]}")


def backward_plan(geometry: WindowGeometry, dtype: torch.dtype, has_qkv_bias: bool,
                  config: WindowConfig | None = None, windows_per_prog: int | None = None) -> BackwardPlan:
    """The plan of ``window_attention_bwd`` for this geometry with qkv (and table) of ``dtype``.

    Work buffers (name: shape, dtype): ``rpb``/``rpbt`` the dense bias and its transpose
    ``(nH, N, block_n)`` (dtype); ``delta`` ``(B, H, W, nH)``, ``ds_part`` the table-gradient partials
    ``(num_splits, nH, N, N)`` and, with a qkv bias, ``dbias_part`` its partials ``(programs, 2, C)``
    (fp32); ``dtable32`` ``(R, nH)`` and ``dbias32`` ``(3C,)``, the fp32 sums before the cast to a
    narrower dtype (absent for fp32: then they are the outputs). All are alive together when the launcher
    returns, so ``work_buffers.total_bytes`` of them adds to the peak of any caller.
    """
    g = geometry
    config = config or pick_config(g.tokens)
    m_tiles = triton.cdiv(g.tokens, config.bwd_block_m)
    num_splits, per_split = num_splits_for(g.windows, g.num_heads, m_tiles)
    per_program = windows_per_prog or pick_windows_per_program(g.windows, m_tiles * g.num_heads)
    chunks = triton.cdiv(g.windows, per_program)
    fp32 = torch.float32
    dense_bias = (g.num_heads, g.tokens, config.block_n)
    buffers = [WorkBuffer("rpb", dense_bias, dtype), WorkBuffer("rpbt", dense_bias, dtype),
               WorkBuffer("delta", (g.batch, g.height, g.width, g.num_heads), fp32),
               WorkBuffer("ds_part", (num_splits, g.num_heads, g.tokens, g.tokens), fp32)]
    if has_qkv_bias:
        buffers.append(WorkBuffer("dbias_part", (chunks * m_tiles, 2, g.channels), fp32))
    if dtype != fp32:
        buffers.append(WorkBuffer("dtable32", g.table_shape, fp32))
        if has_qkv_bias:
            buffers.append(WorkBuffer("dbias32", (3 * g.channels,), fp32))
    return BackwardPlan(config, m_tiles, num_splits, per_split, per_program, chunks, tuple(buffers))


def work_buffers(geometry: WindowGeometry, dtype: torch.dtype, has_qkv_bias: bool) -> tuple[WorkBuffer, ...]:
    """What ``window_attention_bwd`` allocates besides its outputs (``backward_plan(...).buffers``)."""
    return backward_plan(geometry, dtype, has_qkv_bias).buffers


def window_attention_bwd(grad_out: torch.Tensor, qkv: torch.Tensor, rpb_table: torch.Tensor,
                         qkv_bias: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor,
                         geometry: WindowGeometry, config: WindowConfig | None = None,
                         windows_per_prog: int | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward. Returns ``dqkv (B, H, W, 3C)`` (qkv dtype), ``drpb_table (R, nH)`` (table
    dtype) and ``dqkv_bias (3C,)`` (bias dtype; q part zero) or None. Work buffers: ``backward_plan``."""
    g = geometry
    plan = backward_plan(g, qkv.dtype, qkv_bias is not None, config, windows_per_prog)
    config, m_tiles = plan.config, plan.m_tiles
    planned = {buffer.name for buffer in plan.buffers}

    def fp32_sum(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        # a work buffer when the output dtype is narrower, else the output itself
        if name in planned:
            return plan.buffer(name).allocate(qkv.device)
        return torch.empty(shape, device=qkv.device, dtype=torch.float32)

    qkv = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
    grad_out = grad_out.to(qkv.dtype).contiguous()
    out = out.contiguous()
    lse = lse.contiguous()
    qkv_bias = qkv_bias.contiguous() if qkv_bias is not None else None  # (3C,): the kernels read it densely
    rpb = dense_relative_bias(rpb_table, g.window, config.block_n)
    rpbt = dense_relative_bias(rpb_table, g.window, config.block_n, transpose=True)
    delta = plan.buffer("delta").allocate(qkv.device)
    tokens = g.batch * g.height * g.width
    _window_attention_bwd_delta_kernel[(triton.cdiv(tokens, 64), g.num_heads)](
        out, grad_out, delta, tokens, g.num_heads, g.channels, HEAD_DIM=g.head_dim, BLOCK_T=64, num_warps=4)
    dqkv = torch.empty(g.qkv_shape, device=qkv.device, dtype=qkv.dtype)
    ds_part = plan.buffer("ds_part").allocate(qkv.device)
    # unused without HAS_QKV_BIAS
    dbias_part = plan.buffer("dbias_part").allocate(qkv.device) if qkv_bias is not None else delta
    num_dq = plan.num_splits * g.num_heads * m_tiles
    grid = (num_dq + plan.chunks * g.num_heads * m_tiles,)
    _window_attention_bwd_kernel[grid](
        qkv, rpb, rpbt, qkv_bias if qkv_bias is not None else rpb, grad_out, delta, lse, dqkv, ds_part, dbias_part,
        qkv.stride(0), qkv.stride(1), qkv.stride(2), grad_out.stride(0), grad_out.stride(1), grad_out.stride(2),
        dqkv.stride(0), dqkv.stride(1), dqkv.stride(2),
        g.height, g.width, *g.padded, g.windows_per_image, g.windows_per_row, g.windows, plan.windows_per_split,
        num_dq, plan.windows_per_program, *g.shift, g.num_heads, g.channels, float(g.scale), float(g.mask_value),
        WH=g.window[0], WW=g.window[1], HEAD_DIM=g.head_dim, BLOCK_M=config.bwd_block_m, BLOCK_N=config.block_n,
        HAS_SHIFT=g.has_shift, HAS_QKV_BIAS=qkv_bias is not None,
        SHIFT_FIRST=g.shift_first, DOT_PRECISION=dot_precision(qkv.dtype),
        ALIGNED=is_aligned(g.channels, qkv, grad_out, dqkv), num_warps=config.bwd_warps,
        num_stages=config.num_stages,
    )
    dtable = fp32_sum("dtable32", tuple(rpb_table.shape))
    _window_attention_table_grad_kernel[(g.num_heads,)](
        ds_part, dtable, plan.num_splits, g.num_heads, g.tokens, WH=g.window[0], WW=g.window[1],
        BLOCK_R=triton.next_power_of_2(dtable.shape[0]), num_warps=8)
    dbias = None
    if qkv_bias is not None:
        C = g.channels
        dbias = fp32_sum("dbias32", (3 * C,))
        dbias[:C].zero_()
        torch.sum(dbias_part, dim=0, out=dbias[C:].view(2, C))  # fixed-order reduction of a small buffer
        dbias = dbias.to(qkv_bias.dtype)
    return dqkv, dtable.to(rpb_table.dtype), dbias
