"""Eager ATSS assignment, one image at a time: the semantics every backend reproduces, and the test oracle.

Convention ``"glip"`` follows GLIP/FIBER ``ATSSLossComputation.prepare_targets`` (microsoft/GLIP,
``maskrcnn_benchmark/modeling/rpn/loss.py``) with ``boxlist_iou`` (+1 on widths and heights);
convention ``"mmdet"`` follows mmdetection ``ATSSAssigner.assign`` with ``bbox_overlaps`` (no +1,
union clamped to 1e-6). Per image and ground-truth box:

1. per level, the ``k = min(topk * anchors_per_location, anchors in level)`` anchors whose centres
   are nearest the box centre (fp32 ``sqrt(dx^2 + dy^2)``); ties go to the lower anchor index;
2. IoU threshold = mean + unbiased std of the candidates' IoUs (NaN for a single candidate, so
   nothing is positive);
3. positive if IoU >= threshold and the anchor centre is inside the box by more than 0.01;
4. an anchor claimed by several boxes goes to the highest IoU, the lower box index on ties.

Two points are pinned down where the originals leave them to the implementation: ``torch.topk``
does not specify which of several equally distant anchors it keeps (we keep the lower index), and
the threshold statistics are summed in float64 and rounded to fp32 (``torch.std`` on CPU also
accumulates in float64; ``torch.mean`` in fp32 can differ from the rounded exact mean by an ulp,
which only matters for an IoU within an ulp of the threshold).

The per-image loop allocates ``(A, G)`` distance and IoU matrices, as GLIP and mmdetection do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CONVENTIONS = ("glip", "mmdet")
INSIDE_MARGIN = 0.01
MMDET_EPS = 1e-6


def centers(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``(x2 + x1) / 2``, ``(y2 + y1) / 2`` of boxes ``(..., 4)`` xyxy."""
    return (boxes[..., 2] + boxes[..., 0]) / 2.0, (boxes[..., 3] + boxes[..., 1]) / 2.0


def pairwise_iou(anchors: torch.Tensor, boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """IoU ``(..., A, G)`` of anchors ``(..., A, 4)`` and boxes ``(..., G, 4)``, fp32.

    ``"glip"``: maskrcnn-benchmark ``boxlist_iou`` (+1). ``"mmdet"``: ``bbox_overlaps`` (eps 1e-6).
    """
    one = 1.0 if convention == "glip" else 0.0
    area_a = (anchors[..., 2] - anchors[..., 0] + one) * (anchors[..., 3] - anchors[..., 1] + one)
    area_g = (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)
    lt = torch.max(anchors[..., :, None, :2], boxes[..., None, :, :2])
    rb = torch.min(anchors[..., :, None, 2:], boxes[..., None, :, 2:])
    wh = (rb - lt + one).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_g[..., None, :] - inter
    if convention == "mmdet":
        union = torch.max(union, union.new_tensor([MMDET_EPS]))
    return inter / union


def center_distances(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances ``(..., A, G)`` between anchor centres and box centres, fp32."""
    acx, acy = centers(anchors)
    gcx, gcy = centers(boxes)
    anchor_points = torch.stack((acx, acy), dim=-1)
    box_points = torch.stack((gcx, gcy), dim=-1)
    return (anchor_points[..., :, None, :] - box_points[..., None, :, :]).pow(2).sum(-1).sqrt()


def nearest_per_level(distances: torch.Tensor, num_anchors_per_level: Sequence[int], k_total: int) -> torch.Tensor:
    """Candidate anchor indices ``(G, C)`` (C = sum of per-level k): per level the ``min(k_total, n)``
    smallest distances of each column of ``distances (A, G)``, ties to the lower index."""
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
            picked.append(take.nonzero()[:, 1].view(num_gt, k) + start)
        start += size
    return torch.cat(picked, dim=1)


def threshold(candidate_ious: torch.Tensor) -> torch.Tensor:
    """Per-box ``mean + std`` (unbiased) of ``candidate_ious (G, C)``: float64 sums, fp32 result."""
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
    is_pos = candidate_ious >= threshold(candidate_ious)[:, None]
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
