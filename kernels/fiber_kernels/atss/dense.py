"""Dense batched ATSS in PyTorch (mmyolo ``BatchATSSAssigner`` style): one pass over the padded
batch with ``(B, A, G)`` distance, IoU and claim tensors. Same semantics as ``reference.py``; it is
the memory-hungry baseline the fused backends are benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .reference import CONVENTIONS, INSIDE_MARGIN, center_distances, centers, pairwise_iou


def atss_assign_dense(anchors: torch.Tensor, num_anchors_per_level: Sequence[int], gt_boxes: torch.Tensor,
                      gt_mask: torch.Tensor, *, topk: int = 9, anchors_per_location: int = 1,
                      convention: str = "glip") -> tuple[torch.Tensor, torch.Tensor]:
    """anchors ``(A, 4)`` or ``(B, A, 4)``, gt_boxes ``(B, G, 4)`` fp32, gt_mask ``(B, G)`` bool.

    Returns ``(B, A)`` int64 box indices (-1 background) and ``(B, A)`` fp32 IoUs (0 background).
    Float64 statistics only (conventions ``"glip"`` / ``"mmdet"``).
    """
    if CONVENTIONS[convention].fp32_statistics:
        raise ValueError(f"convention must be 'glip' or 'mmdet' (float64 statistics), got {convention!r}")
    batch, num_gt = gt_boxes.shape[:2]
    batched = (anchors[None] if anchors.dim() == 2 else anchors).expand(batch, -1, 4)
    num_anchors = batched.shape[1]
    matched = torch.full((batch, num_anchors), -1, dtype=torch.int64, device=gt_boxes.device)
    matched_iou = torch.zeros((batch, num_anchors), dtype=torch.float32, device=gt_boxes.device)
    if num_gt == 0 or num_anchors == 0:
        return matched, matched_iou
    ious = pairwise_iou(batched, gt_boxes, convention)                         # (B, A, G)
    distances = center_distances(batched, gt_boxes)                            # (B, A, G)
    k_total = topk * anchors_per_location
    picked = []
    start = 0
    for size in num_anchors_per_level:
        k = min(k_total, size)
        if k > 0:
            level = distances[:, start:start + size]
            kth = level.topk(k, dim=1, largest=False).values[:, -1:]
            less = level < kth
            tied = (level == kth) & ((level == kth).cumsum(1) <= (k - less.sum(1, keepdim=True)))
            order = torch.arange(size, device=gt_boxes.device)[None, :, None]
            # the k taken anchors rank first; their indices are the k smallest values
            slot = torch.where(less | tied, order, order + size).topk(k, dim=1, largest=False).values
            picked.append(slot + start)
        start += size
    candidates = torch.cat(picked, dim=1)                                      # (B, C, G)
    candidate_ious = ious.gather(1, candidates)
    values = candidate_ious.double()
    mean = values.mean(1, keepdim=True)
    std = ((values - mean).pow(2).sum(1, keepdim=True) / (values.shape[1] - 1)).sqrt()
    is_pos = candidate_ious >= mean.float() + std.float()
    acx, acy = centers(batched)
    cx = acx.gather(1, candidates.flatten(1)).view_as(candidates)
    cy = acy.gather(1, candidates.flatten(1)).view_as(candidates)
    margin = torch.stack([cx - gt_boxes[:, None, :, 0], cy - gt_boxes[:, None, :, 1],
                          gt_boxes[:, None, :, 2] - cx, gt_boxes[:, None, :, 3] - cy]).min(dim=0).values
    is_pos &= (margin > INSIDE_MARGIN) & gt_mask[:, None, :]
    claims = torch.full((batch, num_anchors, num_gt), -1.0, dtype=torch.float32, device=gt_boxes.device)
    claims.scatter_(1, candidates, torch.where(is_pos, candidate_ious, -1.0))
    best, best_box = claims.max(dim=2)
    claimed = best >= 0
    return torch.where(claimed, best_box, -1), torch.where(claimed, best, 0.0)
