"""Eager ATSS assignment, one image at a time: the semantics every backend reproduces, and the test oracle.

Convention ``"glip"`` follows GLIP/FIBER ``ATSSLossComputation.prepare_targets`` (microsoft/GLIP,
``maskrcnn_benchmark/modeling/rpn/loss.py``) with ``boxlist_iou`` (+1 on widths and heights);
convention ``"mmdet"`` follows mmdetection ``ATSSAssigner.assign`` with ``bbox_overlaps`` (no +1,
union clamped to 1e-6). Per image and ground-truth box:

1. per level, the ``k = min(topk * anchors_per_location, anchors in level)`` anchors whose centres
   are nearest the box centre (fp32 ``sqrt(dx^2 + dy^2)``, IEEE-rounded); ties go to the lower anchor index;
2. IoU threshold = mean + unbiased std of the candidates' IoUs (NaN for a single candidate, so
   nothing is positive);
3. positive if IoU >= threshold and the anchor centre is inside the box by more than 0.01;
4. an anchor claimed by several boxes goes to the highest IoU, the lower box index on ties.

``torch.topk`` does not specify which of several equally distant anchors it keeps: we keep the lower
index. The threshold statistics are the convention's (``CONVENTIONS``): ``"glip"`` / ``"mmdet"`` (ours,
every backend) sum them in float64 and round the mean and the std to fp32; ``"glip_fp32"`` /
``"mmdet_fp32"`` compute them as the originals do, ``candidate_ious.mean(0) + candidate_ious.std(0)`` on
the fp32 ``(C, G)`` tensor of the candidates in topk order (level by level, nearest first), here with
those very torch calls (so on any device) and in the C++ CPU kernel by torch's CPU order of additions.
They differ where an IoU lies within an ulp or two of the threshold (tests/atss/test_statistics.py counts
the anchors on COCO-like boxes).

The per-image loop allocates ``(A, G)`` distance and IoU matrices, as GLIP and mmdetection do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Convention:
    """How a codebase computes ATSS. ``boxes``: ``"glip"`` (maskrcnn-benchmark: +1 on widths and heights)
    or ``"mmdet"`` (no +1, union >= 1e-6); ``fp32_statistics``: the threshold's mean as torch's fp32
    ``mean(0)`` (GLIP, mmdetection) instead of float64 sums (ours)."""

    boxes: str
    fp32_statistics: bool


CONVENTIONS = {"glip": Convention("glip", False), "mmdet": Convention("mmdet", False),
               "glip_fp32": Convention("glip", True), "mmdet_fp32": Convention("mmdet", True)}
INSIDE_MARGIN = 0.01
MMDET_EPS = 1e-6


def centers(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``(x2 + x1) / 2``, ``(y2 + y1) / 2`` of boxes ``(..., 4)`` xyxy."""
    return (boxes[..., 2] + boxes[..., 0]) / 2.0, (boxes[..., 3] + boxes[..., 1]) / 2.0


def pairwise_iou(anchors: torch.Tensor, boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """IoU ``(..., A, G)`` of anchors ``(..., A, 4)`` and boxes ``(..., G, 4)``, fp32.

    ``"glip"``: maskrcnn-benchmark ``boxlist_iou`` (+1). ``"mmdet"``: ``bbox_overlaps`` (eps 1e-6).
    """
    boxes_of = CONVENTIONS[convention].boxes
    one = 1.0 if boxes_of == "glip" else 0.0
    area_a = (anchors[..., 2] - anchors[..., 0] + one) * (anchors[..., 3] - anchors[..., 1] + one)
    area_g = (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)
    lt = torch.max(anchors[..., :, None, :2], boxes[..., None, :, :2])
    rb = torch.min(anchors[..., :, None, 2:], boxes[..., None, :, 2:])
    wh = (rb - lt + one).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_g[..., None, :] - inter
    if boxes_of == "mmdet":
        union = torch.max(union, union.new_tensor([MMDET_EPS]))
    return inter / union


def center_distances(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances ``(..., A, G)`` between anchor centres and box centres, fp32, the square root correctly
    rounded (as the kernels' IEEE sqrt): torch's fp32 ``sqrt`` on the CPU (MKL's vector math) can return the
    upper neighbour, e.g. 6.32455587 for sqrt(40.0000038) = 6.3245556; the float64 root of an fp32 value
    rounds to the correctly rounded fp32 one."""
    acx, acy = centers(anchors)
    gcx, gcy = centers(boxes)
    anchor_points = torch.stack((acx, acy), dim=-1)
    box_points = torch.stack((gcx, gcy), dim=-1)
    squared = (anchor_points[..., :, None, :] - box_points[..., None, :, :]).pow(2).sum(-1)
    return squared.double().sqrt().float()


def nearest_per_level(distances: torch.Tensor, num_anchors_per_level: Sequence[int], k_total: int) -> torch.Tensor:
    """Candidate anchor indices ``(G, C)`` (C = sum of per-level k): per level the ``min(k_total, n)``
    smallest distances of each column of ``distances (A, G)``, ties to the lower index, nearest first
    (the originals' ``topk`` order; equal distances by index)."""
    num_gt = distances.shape[1]
    picked = []
    start = 0
    for size in num_anchors_per_level:
        k = min(k_total, size)
        if k > 0:
            level = distances[start:start + size]
            kth = level.topk(k, dim=0, largest=False).values[-1]
            less = level < kth
            # equal-to-kth anchors fill the remaining places in index order
            tied = (level == kth) & ((level == kth).cumsum(0) <= (k - less.sum(0)))
            take = (less | tied).t()
            index = take.nonzero()[:, 1].view(num_gt, k)
            order = level.t().gather(1, index).sort(dim=1, stable=True).indices
            picked.append(index.gather(1, order) + start)
        start += size
    return torch.cat(picked, dim=1)


def threshold(candidate_ious: torch.Tensor, fp32_statistics: bool = False) -> torch.Tensor:
    """Per-box ``mean + std`` (unbiased) of ``candidate_ious (G, C)``, fp32: float64 sums rounded, or the
    originals' ``mean(0) + std(0)`` of the contiguous fp32 ``(C, G)`` tensor (``fp32_statistics``)."""
    if fp32_statistics:
        columns = candidate_ious.t().contiguous()
        return columns.mean(0) + columns.std(0)
    values = candidate_ious.double()
    mean = values.mean(1)
    std = ((values - mean[:, None]).pow(2).sum(1) / (values.shape[1] - 1)).sqrt()
    return mean.float() + std.float()


def assign_image(anchors: torch.Tensor, num_anchors_per_level: Sequence[int], gt_boxes: torch.Tensor, *,
                 topk: int = 9, anchors_per_location: int = 1,
                 convention: str = "glip") -> tuple[torch.Tensor, torch.Tensor]:
    """ATSS for one image: anchors ``(A, 4)`` and boxes ``(G, 4)`` fp32 xyxy.

    Returns the matched box index ``(A,)`` int64 (-1 background) and its IoU ``(A,)`` fp32 (0 background).
    """
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    matched = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    matched_iou = torch.zeros(num_anchors, dtype=torch.float32, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return matched, matched_iou
    ious = pairwise_iou(anchors, gt_boxes, convention)                       # (A, G)
    candidates = nearest_per_level(center_distances(anchors, gt_boxes), num_anchors_per_level,
                                   topk * anchors_per_location)              # (G, C)
    box_index = torch.arange(num_gt, device=anchors.device)[:, None]
    candidate_ious = ious[candidates, box_index]                              # (G, C)
    is_pos = candidate_ious >= threshold(candidate_ious, CONVENTIONS[convention].fp32_statistics)[:, None]
    acx, acy = centers(anchors)
    cx, cy = acx[candidates], acy[candidates]
    margin = torch.stack([cx - gt_boxes[:, 0:1], cy - gt_boxes[:, 1:2],
                          gt_boxes[:, 2:3] - cx, gt_boxes[:, 3:4] - cy], dim=0).min(dim=0).values
    is_pos &= margin > INSIDE_MARGIN
    # highest IoU wins; torch.max returns the first (lowest) box index on ties
    claims = torch.full((num_anchors, num_gt), -1.0, dtype=torch.float32, device=anchors.device)
    pos_box, pos_slot = is_pos.nonzero(as_tuple=True)
    claims[candidates[pos_box, pos_slot], pos_box] = candidate_ious[pos_box, pos_slot]
    best, best_box = claims.max(dim=1)
    claimed = best >= 0
    matched[claimed] = best_box[claimed]
    matched_iou[claimed] = best[claimed]
    return matched, matched_iou


def atss_assign_reference(anchors: torch.Tensor, num_anchors_per_level: Sequence[int], gt_boxes: torch.Tensor,
                          gt_mask: torch.Tensor | None = None, *, topk: int = 9, anchors_per_location: int = 1,
                          convention: str = "glip") -> tuple[torch.Tensor, torch.Tensor]:
    """The per-image loop over a padded batch.

    anchors ``(A, 4)`` or ``(B, A, 4)``, gt_boxes ``(B, G, 4)`` fp32, gt_mask ``(B, G)`` bool (None: all
    valid). Returns ``(B, A)`` int64 box indices into the padded G (-1 background) and ``(B, A)`` fp32 IoU.
    """
    batch, num_gt = gt_boxes.shape[:2]
    if batch == 0:  # nothing to stack: the empty (0, A) result
        num_anchors = anchors.shape[-2]
        return (torch.empty((0, num_anchors), dtype=torch.int64, device=gt_boxes.device),
                torch.empty((0, num_anchors), dtype=torch.float32, device=gt_boxes.device))
    matched, matched_iou = [], []
    for b in range(batch):
        image_anchors = anchors if anchors.dim() == 2 else anchors[b]
        valid = torch.arange(num_gt, device=gt_boxes.device) if gt_mask is None else gt_mask[b].nonzero()[:, 0]
        index, iou = assign_image(image_anchors, num_anchors_per_level, gt_boxes[b, valid], topk=topk,
                                  anchors_per_location=anchors_per_location, convention=convention)
        matched.append(torch.where(index >= 0, valid[index.clamp(min=0)] if valid.numel() else index, index))
        matched_iou.append(iou)
    return torch.stack(matched), torch.stack(matched_iou)
