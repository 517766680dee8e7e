"""Triton ATSS assignment, batched over images and boxes, without (A, G) matrices.

Two kernels:

* ``_atss_candidates_kernel``, one program per (image, box): per level a streaming top-k of
  unique int64 keys ``(distance bits << 32) | anchor`` (the k nearest anchor centres, ties to the
  lower index) over tiles of ``BLOCK`` anchors: while the tile's smallest key beats the worst kept
  key, it replaces it (no sort; tiles far from the box cost one min). Then, with the candidates
  in registers as ``[L_PAD, K_PAD]``: their IoUs, the float64 mean + unbiased std threshold, the
  centre-inside test, and an ``atomic_max`` of the packed claim ``(IoU bits << 32) | (2^31 - 1 - box)``
  into a ``(B, A)`` int64 buffer (highest IoU wins, lower box index on ties; max is order-free, so
  deterministic).
* ``_atss_resolve_kernel``, elementwise over ``(B, A)``: unpacks the winning claim.

Memory: the ``(B, A)`` claim buffer, the ``(B, G)`` int8 mask and the outputs (``work_buffers``,
which the launcher allocates from); candidates live in registers. Arithmetic is round-to-nearest
without FMA contraction (``div_rn``, ``sqrt_rn``, ``COMPILE_OPTIONS``), so results equal the reference
bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..work_buffers import WorkBuffer

MAX_LEVELS = 8
CLAIM_INDEX_BASE: tl.constexpr = tl.constexpr(0x7FFFFFFF)
NO_KEY: tl.constexpr = tl.constexpr(0x7FFFFFFFFFFFFFFF)
# One tile config for every level size: anchors per distance tile and warps. A second (256, 4) config for
# small pyramids kept 8-16 B of stack on sm90 in 2 of its 12 (K_PAD, L_PAD) variants; a level that fits
# in fewer anchors only masks lanes. K_PAD (candidates per level) by topk * anchors_per_location.
BLOCK = 1024
NUM_WARPS = 4
NUM_STAGES = 1  # nothing to pipeline: each tile's loads feed a data-dependent while loop
K_PADS = (16, 32, 64, 128)
# Every launch of both kernels compiles with these (no a*b+c contracted to an FMA).
COMPILE_OPTIONS = {"enable_fp_fusion": False}
RESOLVE_BLOCK = 1024


@triton.jit
def _atss_candidates_kernel(
    anchors_ptr, level_starts_ptr, gt_ptr, mask_ptr, claims_ptr,
    num_boxes, num_anchors, num_levels, topk_total, stride_anchor_batch,
    GLIP: tl.constexpr, ONE: tl.constexpr, L_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    image = pid // num_boxes
    box = pid % num_boxes
    valid = tl.load(mask_ptr + pid).to(tl.int32)
    gx1 = tl.load(gt_ptr + pid * 4 + 0)
    gy1 = tl.load(gt_ptr + pid * 4 + 1)
    gx2 = tl.load(gt_ptr + pid * 4 + 2)
    gy2 = tl.load(gt_ptr + pid * 4 + 3)
    gcx = (gx2 + gx1) * 0.5
    gcy = (gy2 + gy1) * 0.5
    area_g = (gx2 - gx1 + ONE) * (gy2 - gy1 + ONE)
    anchors_ptr += image * stride_anchor_batch

    rows = tl.arange(0, L_PAD)[:, None]
    slots = tl.arange(0, K_PAD).to(tl.int64)
    cand_anchor = tl.full((L_PAD, K_PAD), -1, tl.int64)
    levels = tl.where(valid != 0, num_levels, 0)
    for level in range(0, levels):
        start = tl.load(level_starts_ptr + level)
        end = tl.load(level_starts_ptr + level + 1)
        k = tl.minimum(end - start, topk_total)
        # the k best keys, unordered; slots >= k hold -1 so they are never the worst
        best = tl.where(slots < k, NO_KEY - slots, -1)
        worst = tl.max(best, axis=0)
        for tile in range(start, end, BLOCK):
            offs = tile + tl.arange(0, BLOCK)
            inside = offs < end
            ax1 = tl.load(anchors_ptr + offs * 4 + 0, mask=inside, other=0.0)
            ay1 = tl.load(anchors_ptr + offs * 4 + 1, mask=inside, other=0.0)
            ax2 = tl.load(anchors_ptr + offs * 4 + 2, mask=inside, other=0.0)
            ay2 = tl.load(anchors_ptr + offs * 4 + 3, mask=inside, other=0.0)
            dx = (ax2 + ax1) * 0.5 - gcx
            dy = (ay2 + ay1) * 0.5 - gcy
            dist = tl.sqrt_rn(dx * dx + dy * dy)
            key = (dist.to(tl.int32, bitcast=True).to(tl.int64) << 32) | offs
            key = tl.where(inside, key, NO_KEY)
            nearest = tl.min(key, axis=0)
            # keys are unique: move the tile's nearest key into the worst slot until none is better
            while nearest < worst:
                best = tl.where(best == worst, nearest, best)
                key = tl.where(key == nearest, NO_KEY, key)
                worst = tl.max(best, axis=0)
                nearest = tl.min(key, axis=0)
        anchor = tl.where(slots < k, best & 0xFFFFFFFF, -1)
        cand_anchor = tl.where(rows == level, anchor[None, :], cand_anchor)

    taken = cand_anchor >= 0
    safe = tl.where(taken, cand_anchor, 0)
    ax1 = tl.load(anchors_ptr + safe * 4 + 0, mask=taken, other=0.0)
    ay1 = tl.load(anchors_ptr + safe * 4 + 1, mask=taken, other=0.0)
    ax2 = tl.load(anchors_ptr + safe * 4 + 2, mask=taken, other=0.0)
    ay2 = tl.load(anchors_ptr + safe * 4 + 3, mask=taken, other=0.0)
    area_a = (ax2 - ax1 + ONE) * (ay2 - ay1 + ONE)
    w = tl.maximum(tl.minimum(ax2, gx2) - tl.maximum(ax1, gx1) + ONE, 0.0)
    h = tl.maximum(tl.minimum(ay2, gy2) - tl.maximum(ay1, gy1) + ONE, 0.0)
    inter = w * h
    union = area_a + area_g - inter
    if not GLIP:
        union = tl.maximum(union, 1e-6)
    cand_iou = tl.where(taken, tl.div_rn(inter, union), 0.0)
    # the centre test before the statistics: the anchor corners die here instead of being kept across the
    # slow-path subroutine calls of the float64 division and square root (ptxas saves such values on the stack)
    cx = (ax2 + ax1) * 0.5
    cy = (ay2 + ay1) * 0.5
    margin = tl.minimum(tl.minimum(cx - gx1, cy - gy1), tl.minimum(gx2 - cx, gy2 - cy))
    central = taken & (margin > 0.01)

    count = tl.sum(tl.sum(taken.to(tl.int64), axis=1), axis=0).to(tl.float64)
    iou64 = cand_iou.to(tl.float64)
    mean = tl.sum(tl.sum(iou64, axis=1), axis=0) / tl.maximum(count, 1.0)
    centered = tl.where(taken, iou64 - mean, 0.0)
    # unbiased variance; NaN for a single candidate (torch.std), so nothing is positive
    var = tl.sum(tl.sum(centered * centered, axis=1), axis=0) / tl.maximum(count - 1.0, 1.0)
    var = tl.where(count > 1.0, var, float("nan"))
    thr = mean.to(tl.float32) + tl.sqrt(var).to(tl.float32)  # fp64 sqrt is IEEE (sqrt.rn.f64)

    positive = central & (cand_iou >= thr)
    claim = (cand_iou.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (CLAIM_INDEX_BASE - box)
    tl.atomic_max(claims_ptr + image * num_anchors + safe, claim, mask=positive)


@triton.jit
def _atss_resolve_kernel(claims_ptr, matched_ptr, iou_ptr, total, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < total
    claim = tl.load(claims_ptr + offs, mask=inside, other=-1)
    claimed = claim >= 0
    box = tl.where(claimed, CLAIM_INDEX_BASE - (claim & 0xFFFFFFFF), -1)
    iou = tl.where(claimed, (claim >> 32).to(tl.int32).to(tl.float32, bitcast=True), 0.0)
    tl.store(matched_ptr + offs, box, mask=inside)
    tl.store(iou_ptr + offs, iou, mask=inside)


def k_pad_for(topk_total: int) -> int:
    """Smallest register width of ``K_PADS`` holding ``topk_total`` candidates per level."""
    for k_pad in K_PADS:
        if topk_total <= k_pad:
            return k_pad
    raise ValueError(f"topk * anchors_per_location must be <= {K_PADS[-1]} for the triton backend, got {topk_total}")


def l_pad_for(num_levels: int) -> int:
    """Register rows for ``num_levels`` levels: the next power of two, at least 2."""
    return max(2, triton.next_power_of_2(num_levels))


def work_buffers(batch: int, num_gt: int, num_anchors: int) -> tuple[WorkBuffer, ...]:
    """Every tensor ``atss_assign_triton`` allocates, in order: the outputs ``matched`` ``(B, A)`` i64 and
    ``matched_iou`` ``(B, A)`` f32, the workspace ``claims`` ``(B, A)`` i64 filled with -1, and, when the
    candidates kernel launches (B*G > 0 and A > 0), ``mask`` ``(B, G)`` int8 (the bool mask as the kernel
    reads it). Inputs are taken as they are (the launcher needs them contiguous)."""
    buffers = (WorkBuffer("matched", (batch, num_anchors), torch.int64),
               WorkBuffer("matched_iou", (batch, num_anchors), torch.float32),
               WorkBuffer("claims", (batch, num_anchors), torch.int64, fill=-1))
    if batch * num_gt > 0 and num_anchors > 0:
        buffers += (WorkBuffer("mask", (batch, num_gt), torch.int8),)
    return buffers


def atss_assign_triton(anchors: torch.Tensor, level_starts: torch.Tensor, gt_boxes: torch.Tensor,
                       gt_mask: torch.Tensor, topk_total: int, glip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch both kernels. anchors ``(1 or B, A, 4)`` f32, level_starts ``(L + 1,)`` i64 on the same device
    (nothing is read back from it), gt_boxes ``(B, G, 4)`` f32, gt_mask ``(B, G)`` bool, all contiguous.
    Returns ``(B, A)`` i64 matches and ``(B, A)`` f32 IoUs. Allocates exactly ``work_buffers(B, G, A)``."""
    if not (anchors.is_contiguous() and gt_boxes.is_contiguous() and gt_mask.is_contiguous()):
        raise ValueError("atss_assign_triton needs contiguous anchors, gt_boxes and gt_mask")
    batch, num_gt = gt_boxes.shape[:2]
    num_anchors = anchors.shape[1]
    num_levels = level_starts.numel() - 1
    buffers = {buffer.name: buffer.allocate(gt_boxes.device) for buffer in work_buffers(batch, num_gt, num_anchors)}
    matched, matched_iou, claims = buffers["matched"], buffers["matched_iou"], buffers["claims"]
    if "mask" in buffers:
        _atss_candidates_kernel[(batch * num_gt,)](
            anchors, level_starts, gt_boxes, buffers["mask"].copy_(gt_mask), claims,
            num_gt, num_anchors, num_levels, topk_total, 0 if anchors.shape[0] == 1 else num_anchors * 4,
            GLIP=glip, ONE=1.0 if glip else 0.0, L_PAD=l_pad_for(num_levels), K_PAD=k_pad_for(topk_total),
            BLOCK=BLOCK, num_warps=NUM_WARPS, num_stages=NUM_STAGES, **COMPILE_OPTIONS,
        )
    total = batch * num_anchors
    if total > 0:
        _atss_resolve_kernel[(triton.cdiv(total, RESOLVE_BLOCK),)](claims, matched, matched_iou, total,
                                                                     BLOCK=RESOLVE_BLOCK, num_warps=NUM_WARPS,
                                                                     num_stages=NUM_STAGES, **COMPILE_OPTIONS)
    return matched, matched_iou
