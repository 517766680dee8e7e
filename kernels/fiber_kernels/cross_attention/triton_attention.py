"""Triton kernels of the grouped cross-attention core (flash-style, forward and backward).

Query batch ``b`` of q ``(B, H, Nq, D)`` reads key batch ``b // G`` of k/v ``(Bk, H, Nk, D)``,
``G = B // Bk``. The ``G * Nq`` query rows that share one key batch are one flattened row space, so a
row tile packs several short windows (49 or 144 tokens) and no key/value is ever copied per window.
Logits of padded keys get FIBER's additive ``-10000``; a row with no unpadded key returns zeros and
stores ``lse = +inf`` so that its backward probabilities (``exp(s - lse)``) are exactly zero.

Backward is deterministic: dq by row tiles; dk/dv by key tiles, each program looping over a fixed
contiguous split of the shared query rows; splits > 1 write fp32 partials summed in a fixed order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..dispatch import CUDA_MAX_GRID_Y, BackendLimits, DeviceInfo, triton_dtype_reasons
from ..work_buffers import WorkBuffer
from .reference import MASK_VALUE

LOG2E = 1.4426950408889634
# Globals read inside @triton.jit functions must be constexpr.
LOG2E_C = tl.constexpr(LOG2E)
MASK_VALUE_LOG2 = tl.constexpr(MASK_VALUE * LOG2E)
HEAD_DIMS = (32, 64, 128)
# B * H is the grid's y dimension of the backward preprocess kernel on a GPU; tensor cores from sm80.
LIMITS = BackendLimits(head_dims=HEAD_DIMS, max_grid_y=CUDA_MAX_GRID_Y, min_capability=(8, 0))


def gpu_reasons(device: DeviceInfo, dtype: torch.dtype, limits: BackendLimits) -> list[str]:
    """Limits of the Triton kernels (attention and gated linear) on a GPU: tensor cores (``limits.min_capability``),
    and TF32 for fp32 inputs."""
    if device.type != "cuda":
        return []
    found = limits.capability_reasons(device)
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        found.append("fp32 inputs with torch.backends.cuda.matmul.allow_tf32 = False need exact fp32 FMA math, "
                     "which spills in these tiles on sm80/sm90; set it to True for the TF32 tensor-core kernels")
    return found


def reasons(device: DeviceInfo, q: torch.Tensor, **_: object) -> list[str]:
    """Why these kernels cannot take q ``(B, H, Nq, D)`` on ``device`` (the dispatch reasons; empty when they can):
    the head dim, the backward preprocess grid on a GPU, :func:`gpu_reasons` and the Triton dtype limits."""
    found = LIMITS.head_dim_reasons(q.shape[-1], "head dim D")
    if device.type == "cuda" and q.shape[0] * q.shape[1] > LIMITS.max_grid_y:
        found.append(f"B * H must be <= {LIMITS.max_grid_y} on a GPU (the grid's y dimension of the backward "
                     f"preprocess kernel), got {q.shape[0] * q.shape[1]}")
    return found + gpu_reasons(device, q.dtype, LIMITS) + triton_dtype_reasons(device, q.dtype)


@dataclass(frozen=True)
class AttentionConfig:
    """Tile sizes and launch shape of one kernel for one head dim."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# The launchers pick only from CONFIGS (the ahead-of-time compile tests iterate it), keyed by
# (kernel, architecture family, fp32 inputs) and then head dim. Chosen from ahead-of-time compiles
# (tests/cross_attention/test_compile.py): none spills on sm80/sm90 and all use tensor cores there.
# sm90's wgmma needs 64-row tiles, which spill on sm80 for the D = 128 forward; fp32 tiles are halved.
_C = AttentionConfig
_DQ = {32: _C(64, 64, 4, 2), 64: _C(64, 64, 4, 2), 128: _C(64, 32, 8, 2)}
_DQ_FP32 = {32: _C(64, 64, 4, 2), 64: _C(64, 32, 4, 2), 128: _C(64, 32, 8, 2)}
_DKDV = {32: _C(64, 64, 4, 2), 64: _C(64, 32, 4, 2), 128: _C(32, 64, 8, 2)}
_DKDV_FP32 = {32: _C(64, 64, 4, 2), 64: _C(64, 32, 8, 2), 128: _C(16, 64, 8, 2)}
CONFIGS: dict[tuple[str, int, bool], dict[int, AttentionConfig]] = {
    ("fwd", 80, False): {32: _C(64, 64, 4, 2), 64: _C(64, 64, 8, 2), 128: _C(32, 64, 4, 2)},
    ("fwd", 90, False): {32: _C(64, 64, 4, 2), 64: _C(64, 64, 8, 2), 128: _C(64, 64, 8, 2)},
    ("fwd", 80, True): {32: _C(64, 64, 4, 2), 64: _C(64, 64, 8, 2), 128: _C(32, 32, 8, 2)},
    ("fwd", 90, True): {32: _C(64, 64, 4, 2), 64: _C(64, 64, 8, 2), 128: _C(64, 32, 8, 2)},
    ("dq", 80, False): _DQ, ("dq", 90, False): _DQ, ("dq", 80, True): _DQ_FP32, ("dq", 90, True): _DQ_FP32,
    ("dkdv", 80, False): _DKDV, ("dkdv", 90, False): _DKDV, ("dkdv", 80, True): _DKDV_FP32,
    ("dkdv", 90, True): _DKDV_FP32,
}
PREPROCESS_BLOCK_M = 32
# dk/dv splits: aim for about this many programs before splitting the shared query rows.
DKDV_TARGET_PROGRAMS = 256


def attention_config(kernel: str, head_dim: int, dtype: torch.dtype, device: torch.device) -> AttentionConfig:
    """The config of ``kernel`` ("fwd", "dq", "dkdv"): family 90 on sm90+ GPUs, else 80 (sm80-89 and
    the CPU interpreter)."""
    family = 80
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (9, 0):
        family = 90
    return CONFIGS[(kernel, family, dtype == torch.float32)][head_dim]


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: fp32 inputs follow ``torch.backends.cuda.matmul.allow_tf32``."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


@triton.jit
def _m16(stride, ALIGNED: tl.constexpr):
    """``stride`` with the multiple-of-16 hint Triton's launch specialisation gives aligned strides
    (explicit, so the variant is named by a constexpr and compiles ahead of time as launched)."""
    if ALIGNED:
        stride = tl.multiple_of(stride, 16)
    return stride


@triton.jit
def _group_rows(rows, seqlen_q, num_heads, stride_b, stride_m):
    """int32 offsets of flattened shared rows: (element offset from the group's first query batch,
    offset into the (B, H, Nq) statistics from the same origin)."""
    group = rows // seqlen_q
    row_in_batch = rows % seqlen_q
    return group * stride_b + row_in_batch * stride_m, group * num_heads * seqlen_q + row_in_batch


@triton.jit
def _cross_attention_fwd_kernel(
    Q, K, V, MASK, OUT, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mn,
    stride_ob, stride_oh, stride_om, stride_od,
    num_heads, groups, seqlen_q, seqlen_k, qk_scale,
    HAS_MASK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr, ALIGNED: tl.constexpr,
):
    stride_qb, stride_qh, stride_qm = _m16(stride_qb, ALIGNED), _m16(stride_qh, ALIGNED), _m16(stride_qm, ALIGNED)
    stride_kb, stride_kh, stride_kn = _m16(stride_kb, ALIGNED), _m16(stride_kh, ALIGNED), _m16(stride_kn, ALIGNED)
    stride_vb, stride_vh, stride_vn = _m16(stride_vb, ALIGNED), _m16(stride_vh, ALIGNED), _m16(stride_vn, ALIGNED)
    stride_ob, stride_oh, stride_om = _m16(stride_ob, ALIGNED), _m16(stride_oh, ALIGNED), _m16(stride_om, ALIGNED)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    key_batch = pid_bh // num_heads
    head = pid_bh % num_heads
    first_batch = key_batch * groups
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = rows < groups * seqlen_q
    q_rows, stat_rows = _group_rows(rows, seqlen_q, num_heads, stride_qb, stride_qm)
    o_rows, _ = _group_rows(rows, seqlen_q, num_heads, stride_ob, stride_om)
    offs_d = tl.arange(0, HEAD_DIM)

    q_base = Q + first_batch * stride_qb + head * stride_qh
    q = tl.load(q_base + q_rows[:, None] + offs_d[None, :] * stride_qd, mask=row_valid[:, None], other=0.0)
    k_base = K + key_batch * stride_kb + head * stride_kh
    v_base = V + key_batch * stride_vb + head * stride_vh
    mask_base = MASK + key_batch * stride_mb

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    unpadded = tl.zeros([BLOCK_N], dtype=tl.int32)
    for start_n in range(0, seqlen_k, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_valid = cols < seqlen_k
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=col_valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        bias = tl.where(col_valid, 0.0, float("-inf"))
        if HAS_MASK:
            pad = tl.load(mask_base + cols * stride_mn, mask=col_valid, other=1) != 0
            bias += tl.where(pad, MASK_VALUE_LOG2, 0.0)
            unpadded += (col_valid & (pad == 0)).to(tl.int32)
        s = s + bias[None, :]
        m_new = tl.maximum(m_i, tl.max(s, 1))
        correction = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * correction + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=col_valid[:, None], other=0.0)
        acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]
    lse = (m_i + tl.log2(l_i)) / LOG2E_C
    if HAS_MASK:
        no_key = tl.sum(unpadded, 0) == 0
        out = tl.where(no_key, 0.0, out)
        lse = tl.where(no_key, float("inf"), lse)
    o_base = OUT + first_batch * stride_ob + head * stride_oh
    tl.store(o_base + o_rows[:, None] + offs_d[None, :] * stride_od, out.to(OUT.dtype.element_ty),
             mask=row_valid[:, None])
    tl.store(LSE + (first_batch * num_heads + head) * seqlen_q + stat_rows, lse, mask=row_valid)


@triton.jit
def _cross_attention_bwd_preprocess_kernel(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    num_heads, seqlen_q,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, ALIGNED: tl.constexpr,
):
    stride_ob, stride_oh, stride_om = _m16(stride_ob, ALIGNED), _m16(stride_oh, ALIGNED), _m16(stride_om, ALIGNED)
    stride_dob, stride_doh, stride_dom = _m16(stride_dob, ALIGNED), _m16(stride_doh, ALIGNED), _m16(stride_dom, ALIGNED)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    batch = pid_bh // num_heads
    head = pid_bh % num_heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = rows < seqlen_q
    offs_d = tl.arange(0, HEAD_DIM)
    o = tl.load(OUT + batch * stride_ob + head * stride_oh + rows[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=row_valid[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + batch * stride_dob + head * stride_doh + rows[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=row_valid[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh * seqlen_q + rows, tl.sum(o * do, 1), mask=row_valid)


@triton.jit
def _cross_attention_bwd_dkdv_kernel(
    Q, K, V, MASK, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mn,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvs, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    num_heads, groups, seqlen_q, seqlen_k, rows_per_split, scale, qk_scale,
    HAS_MASK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr, ALIGNED: tl.constexpr,
):
    stride_qb, stride_qh, stride_qm = _m16(stride_qb, ALIGNED), _m16(stride_qh, ALIGNED), _m16(stride_qm, ALIGNED)
    stride_kb, stride_kh, stride_kn = _m16(stride_kb, ALIGNED), _m16(stride_kh, ALIGNED), _m16(stride_kn, ALIGNED)
    stride_vb, stride_vh, stride_vn = _m16(stride_vb, ALIGNED), _m16(stride_vh, ALIGNED), _m16(stride_vn, ALIGNED)
    stride_dob, stride_doh, stride_dom = _m16(stride_dob, ALIGNED), _m16(stride_doh, ALIGNED), _m16(stride_dom, ALIGNED)
    stride_dks, stride_dkb, stride_dkh = _m16(stride_dks, ALIGNED), _m16(stride_dkb, ALIGNED), _m16(stride_dkh, ALIGNED)
    stride_dkn = _m16(stride_dkn, ALIGNED)
    stride_dvs, stride_dvb, stride_dvh = _m16(stride_dvs, ALIGNED), _m16(stride_dvb, ALIGNED), _m16(stride_dvh, ALIGNED)
    stride_dvn = _m16(stride_dvn, ALIGNED)
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    pid_split = tl.program_id(2)
    key_batch = pid_bh // num_heads
    head = pid_bh % num_heads
    first_batch = key_batch * groups
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_valid = cols < seqlen_k
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(K + key_batch * stride_kb + head * stride_kh + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=col_valid[:, None], other=0.0)
    v = tl.load(V + key_batch * stride_vb + head * stride_vh + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=col_valid[:, None], other=0.0)
    bias = tl.where(col_valid, 0.0, float("-inf"))
    if HAS_MASK:
        pad = tl.load(MASK + key_batch * stride_mb + cols * stride_mn, mask=col_valid, other=1) != 0
        bias += tl.where(pad, MASK_VALUE_LOG2, 0.0)
    q_base = Q + first_batch * stride_qb + head * stride_qh
    do_base = DO + first_batch * stride_dob + head * stride_doh
    stat_base = (first_batch * num_heads + head) * seqlen_q

    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    row_start = pid_split * rows_per_split
    row_end = tl.minimum(row_start + rows_per_split, groups * seqlen_q)
    for start_m in range(row_start, row_end, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_valid = rows < row_end
        q_rows, stat_rows = _group_rows(rows, seqlen_q, num_heads, stride_qb, stride_qm)
        do_rows, _ = _group_rows(rows, seqlen_q, num_heads, stride_dob, stride_dom)
        q = tl.load(q_base + q_rows[:, None] + offs_d[None, :] * stride_qd, mask=row_valid[:, None], other=0.0)
        do = tl.load(do_base + do_rows[:, None] + offs_d[None, :] * stride_dod, mask=row_valid[:, None], other=0.0)
        lse2 = tl.load(LSE + stat_base + stat_rows, mask=row_valid, other=float("inf")) * LOG2E_C
        delta = tl.load(DELTA + stat_base + stat_rows, mask=row_valid, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale + bias[None, :]
        p = tl.exp2(s - lse2[:, None])
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)

    dk = dk * scale
    dk_base = DK + pid_split.to(tl.int64) * stride_dks + key_batch * stride_dkb + head * stride_dkh
    dv_base = DV + pid_split.to(tl.int64) * stride_dvs + key_batch * stride_dvb + head * stride_dvh
    tl.store(dk_base + cols[:, None] * stride_dkn + offs_d[None, :] * stride_dkd, dk.to(DK.dtype.element_ty),
             mask=col_valid[:, None])
    tl.store(dv_base + cols[:, None] * stride_dvn + offs_d[None, :] * stride_dvd, dv.to(DV.dtype.element_ty),
             mask=col_valid[:, None])


@triton.jit
def _cross_attention_bwd_dq_kernel(
    Q, K, V, MASK, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mn,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    num_heads, groups, seqlen_q, seqlen_k, scale, qk_scale,
    HAS_MASK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr, ALIGNED: tl.constexpr,
):
    stride_qb, stride_qh, stride_qm = _m16(stride_qb, ALIGNED), _m16(stride_qh, ALIGNED), _m16(stride_qm, ALIGNED)
    stride_kb, stride_kh, stride_kn = _m16(stride_kb, ALIGNED), _m16(stride_kh, ALIGNED), _m16(stride_kn, ALIGNED)
    stride_vb, stride_vh, stride_vn = _m16(stride_vb, ALIGNED), _m16(stride_vh, ALIGNED), _m16(stride_vn, ALIGNED)
    stride_dob, stride_doh, stride_dom = _m16(stride_dob, ALIGNED), _m16(stride_doh, ALIGNED), _m16(stride_dom, ALIGNED)
    stride_dqb, stride_dqh, stride_dqm = _m16(stride_dqb, ALIGNED), _m16(stride_dqh, ALIGNED), _m16(stride_dqm, ALIGNED)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    key_batch = pid_bh // num_heads
    head = pid_bh % num_heads
    first_batch = key_batch * groups
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = rows < groups * seqlen_q
    q_rows, stat_rows = _group_rows(rows, seqlen_q, num_heads, stride_qb, stride_qm)
    do_rows, _ = _group_rows(rows, seqlen_q, num_heads, stride_dob, stride_dom)
    dq_rows, _ = _group_rows(rows, seqlen_q, num_heads, stride_dqb, stride_dqm)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + first_batch * stride_qb + head * stride_qh + q_rows[:, None] + offs_d[None, :] * stride_qd,
                mask=row_valid[:, None], other=0.0)
    do = tl.load(DO + first_batch * stride_dob + head * stride_doh + do_rows[:, None] + offs_d[None, :] * stride_dod,
                 mask=row_valid[:, None], other=0.0)
    stat_base = (first_batch * num_heads + head) * seqlen_q
    lse2 = tl.load(LSE + stat_base + stat_rows, mask=row_valid, other=float("inf")) * LOG2E_C
    delta = tl.load(DELTA + stat_base + stat_rows, mask=row_valid, other=0.0)
    k_base = K + key_batch * stride_kb + head * stride_kh
    v_base = V + key_batch * stride_vb + head * stride_vh
    mask_base = MASK + key_batch * stride_mb

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, seqlen_k, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_valid = cols < seqlen_k
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=col_valid[:, None], other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=col_valid[:, None], other=0.0)
        bias = tl.where(col_valid, 0.0, float("-inf"))
        if HAS_MASK:
            pad = tl.load(mask_base + cols * stride_mn, mask=col_valid, other=1) != 0
            bias += tl.where(pad, MASK_VALUE_LOG2, 0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale + bias[None, :]
        p = tl.exp2(s - lse2[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

    dq = dq * scale
    dq_base = DQ + first_batch * stride_dqb + head * stride_dqh
    tl.store(dq_base + dq_rows[:, None] + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty),
             mask=row_valid[:, None])


def strides_aligned(*tensors: torch.Tensor) -> bool:
    """True when every stride but the last of every tensor is a multiple of 16 elements (the
    ``ALIGNED`` variant: vectorised loads; FIBER's layouts always are)."""
    return all(stride % 16 == 0 for tensor in tensors for stride in tensor.stride()[:-1])


def _mask_args(key_padding_mask: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if key_padding_mask is None:
        return like, 0, 0
    mask = key_padding_mask.view(torch.uint8)
    return mask, mask.stride(0), mask.stride(1)


def output_like(q: torch.Tensor) -> torch.Tensor:
    """An empty ``(B, H, Nq, D)`` output stored as ``(B, Nq, H, D)``, so ``.transpose(1, 2)`` is contiguous."""
    batch, heads, seqlen_q, head_dim = q.shape
    return q.new_empty(batch, seqlen_q, heads, head_dim).transpose(1, 2)


def dkdv_plan(q_shape: Sequence[int], k_shape: Sequence[int], config: AttentionConfig,
              splits: int | None = None) -> tuple[int, int]:
    """``(splits, rows_per_split)`` of the dk/dv kernel: the ``G * Nq`` query rows sharing one key batch
    are cut into ``splits`` contiguous slices (whole row tiles), each summed by its own program."""
    shared_rows = (q_shape[0] // k_shape[0]) * q_shape[2]
    if splits is None:
        programs = triton.cdiv(k_shape[2], config.block_n) * k_shape[0] * k_shape[1]
        splits = min(triton.cdiv(DKDV_TARGET_PROGRAMS, programs), triton.cdiv(shared_rows, 2 * config.block_m))
    rows_per_split = triton.cdiv(triton.cdiv(shared_rows, max(1, splits)), config.block_m) * config.block_m
    return triton.cdiv(shared_rows, rows_per_split), rows_per_split


def work_buffers(q_shape: Sequence[int], k_shape: Sequence[int], dtype: torch.dtype, device: torch.device,
                 splits: int | None = None) -> tuple[WorkBuffer, ...]:
    """What :func:`cross_attention_bwd` allocates and frees inside itself for q ``(B, H, Nq, D)`` and k
    ``(Bk, H, Nk, D)`` of ``dtype`` on ``device`` (the launcher's dk/dv config and split plan for them;
    ``splits`` as the launcher's argument):
    ``delta`` fp32 ``rowsum(dO * O)`` ``(B, H, Nq)``; with more than one split the fp32 partials ``dk_part`` /
    ``dv_part`` ``(splits, Bk, H, Nk, D)`` and ``partial_sum``, the fp32 ``(Bk, H, Nk, D)`` sum of one partial
    before its copy into dk or dv. All are alive at once (while the dv partials are summed), so
    ``work_buffers.total_bytes`` of them is the launcher's peak besides its inputs and dq, dk, dv (fake
    tensors run the custom op's fake impl and never see these; memory benchmarks add them from here)."""
    splits, _ = dkdv_plan(q_shape, k_shape, attention_config("dkdv", q_shape[-1], dtype, device), splits)
    return _work_buffers(q_shape, k_shape, splits)


def _work_buffers(q_shape: Sequence[int], k_shape: Sequence[int], splits: int) -> tuple[WorkBuffer, ...]:
    """:func:`work_buffers` for a planned number of dk/dv ``splits``."""
    batch, heads, seqlen_q, _ = q_shape
    fp32 = torch.float32
    delta = WorkBuffer("delta", (batch, heads, seqlen_q), fp32)
    if splits == 1:
        return (delta,)
    partial = (splits, *k_shape)
    return (delta, WorkBuffer("dk_part", partial, fp32), WorkBuffer("dv_part", partial, fp32),
            WorkBuffer("partial_sum", tuple(k_shape), fp32))


def cross_attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_padding_mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward launcher: returns out ``(B, H, Nq, D)`` (dtype of q) and lse ``(B, H, Nq)`` fp32 (natural log)."""
    batch, heads, seqlen_q, head_dim = q.shape
    key_batches, _, seqlen_k, _ = k.shape
    groups = batch // key_batches
    config = attention_config("fwd", head_dim, q.dtype, q.device)
    out = output_like(q)
    lse = torch.empty(batch, heads, seqlen_q, device=q.device, dtype=torch.float32)
    mask, stride_mb, stride_mn = _mask_args(key_padding_mask, q)
    grid = (triton.cdiv(groups * seqlen_q, config.block_m), key_batches * heads)
    _cross_attention_fwd_kernel[grid](
        q, k, v, mask, out, lse,
        *q.stride(), *k.stride(), *v.stride(), stride_mb, stride_mn, *out.stride(),
        heads, groups, seqlen_q, seqlen_k, scale * LOG2E,
        HAS_MASK=key_padding_mask is not None, HEAD_DIM=head_dim, BLOCK_M=config.block_m,
        BLOCK_N=config.block_n, DOT_PRECISION=dot_precision(q.dtype), ALIGNED=strides_aligned(q, k, v, out),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out, lse


def cross_attention_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        out: torch.Tensor, lse: torch.Tensor, key_padding_mask: torch.Tensor | None,
                        scale: float, splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward launcher: dq, dk, dv (dtypes of q, k, v). dk/dv sum over the query groups sharing keys."""
    batch, heads, seqlen_q, head_dim = q.shape
    key_batches, _, seqlen_k, _ = k.shape
    groups = batch // key_batches
    precision = dot_precision(q.dtype)
    mask, stride_mb, stride_mn = _mask_args(key_padding_mask, q)
    has_mask = key_padding_mask is not None

    lse = lse.contiguous()  # (B, H, Nq): the kernels index it by row
    dkdv_config = attention_config("dkdv", head_dim, q.dtype, q.device)
    splits, rows_per_split = dkdv_plan(q.shape, k.shape, dkdv_config, splits)
    buffers = {buffer.name: buffer for buffer in _work_buffers(q.shape, k.shape, splits)}
    delta = buffers["delta"].allocate(q.device)
    _cross_attention_bwd_preprocess_kernel[(triton.cdiv(seqlen_q, PREPROCESS_BLOCK_M), batch * heads)](
        out, grad_out, delta, *out.stride(), *grad_out.stride(), heads, seqlen_q,
        HEAD_DIM=head_dim, BLOCK_M=PREPROCESS_BLOCK_M, ALIGNED=strides_aligned(out, grad_out),
    )

    config = attention_config("dq", head_dim, q.dtype, q.device)
    dq = torch.empty_like(q)
    _cross_attention_bwd_dq_kernel[(triton.cdiv(groups * seqlen_q, config.block_m), key_batches * heads)](
        q, k, v, mask, grad_out, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), stride_mb, stride_mn, *grad_out.stride(), *dq.stride(),
        heads, groups, seqlen_q, seqlen_k, scale, scale * LOG2E,
        HAS_MASK=has_mask, HEAD_DIM=head_dim, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        DOT_PRECISION=precision, ALIGNED=strides_aligned(q, k, v, grad_out, dq),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )

    num_key_blocks = triton.cdiv(seqlen_k, dkdv_config.block_n)
    if splits == 1:
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        dk_target, dv_target = dk.unsqueeze(0), dv.unsqueeze(0)
    else:
        dk_target = buffers["dk_part"].allocate(k.device)
        dv_target = buffers["dv_part"].allocate(v.device)
    _cross_attention_bwd_dkdv_kernel[(num_key_blocks, key_batches * heads, splits)](
        q, k, v, mask, grad_out, lse, delta, dk_target, dv_target,
        *q.stride(), *k.stride(), *v.stride(), stride_mb, stride_mn, *grad_out.stride(),
        *dk_target.stride(), *dv_target.stride(),
        heads, groups, seqlen_q, seqlen_k, rows_per_split, scale, scale * LOG2E,
        HAS_MASK=has_mask, HEAD_DIM=head_dim, BLOCK_M=dkdv_config.block_m, BLOCK_N=dkdv_config.block_n,
        DOT_PRECISION=precision, ALIGNED=strides_aligned(q, k, v, grad_out, dk_target, dv_target),
        num_warps=dkdv_config.num_warps, num_stages=dkdv_config.num_stages,
    )
    if splits > 1:  # fixed-order sum of the partials, into tensors laid out like k and v
        dk = torch.empty_like(k).copy_(dk_target.sum(0))
        dv = torch.empty_like(v).copy_(dv_target.sum(0))
    return dq, dk, dv
