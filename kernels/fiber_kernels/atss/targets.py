"""ATSS regression and centerness targets for matched anchors (elementwise, batched, any device).

``"glip"``: GLIP/FIBER's ``BoxCoder`` (``maskrcnn_benchmark/modeling/rpn/vldyhead.py``): +1 widths,
centres ``(x2 + x1) / 2``, weights (10, 10, 5, 5); centerness from the boxes decoded back from the
targets (``ATSSLossComputation.compute_centerness_targets``). ``"mmdet"``: mmdetection's
``DeltaXYWHBBoxCoder`` with means 0 and stds (0.1, 0.1, 0.2, 0.2) (no +1) and ``ATSSHead.centerness_target``
on the boxes themselves.
"""

from __future__ import annotations

import math

import torch

GLIP_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
MMDET_STDS = (0.1, 0.1, 0.2, 0.2)
DECODE_CLIP = math.log(1000.0 / 16)


def encode(boxes: torch.Tensor, anchors: torch.Tensor, convention: str) -> torch.Tensor:
    """Regression targets ``(N, 4)`` of boxes ``(N, 4)`` relative to anchors ``(N, 4)``, fp32 xyxy."""
    if convention == "glip":
        ex_w = anchors[:, 2] - anchors[:, 0] + 1
        ex_h = anchors[:, 3] - anchors[:, 1] + 1
        ex_cx = (anchors[:, 2] + anchors[:, 0]) / 2
        ex_cy = (anchors[:, 3] + anchors[:, 1]) / 2
        gt_w = boxes[:, 2] - boxes[:, 0] + 1
        gt_h = boxes[:, 3] - boxes[:, 1] + 1
        gt_cx = (boxes[:, 2] + boxes[:, 0]) / 2
        gt_cy = (boxes[:, 3] + boxes[:, 1]) / 2
        wx, wy, ww, wh = GLIP_WEIGHTS
        return torch.stack((wx * (gt_cx - ex_cx) / ex_w, wy * (gt_cy - ex_cy) / ex_h,
                            ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)), dim=1)
    px = (anchors[:, 0] + anchors[:, 2]) * 0.5
    py = (anchors[:, 1] + anchors[:, 3]) * 0.5
    pw = anchors[:, 2] - anchors[:, 0]
    ph = anchors[:, 3] - anchors[:, 1]
    gx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    gy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    gw = boxes[:, 2] - boxes[:, 0]
    gh = boxes[:, 3] - boxes[:, 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return deltas / deltas.new_tensor(MMDET_STDS)


def decode_glip(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """GLIP's ``BoxCoder.decode`` for ``(N, 4)`` codes and anchors (the inverse of ``encode``)."""
    widths = anchors[:, 2] - anchors[:, 0] + 1
    heights = anchors[:, 3] - anchors[:, 1] + 1
    ctr_x = (anchors[:, 2] + anchors[:, 0]) / 2
    ctr_y = (anchors[:, 3] + anchors[:, 1]) / 2
    wx, wy, ww, wh = GLIP_WEIGHTS
    dx, dy = codes[:, 0] / wx, codes[:, 1] / wy
    dw = torch.clamp(codes[:, 2] / ww, max=DECODE_CLIP)
    dh = torch.clamp(codes[:, 3] / wh, max=DECODE_CLIP)
    pred_cx = dx * widths + ctr_x
    pred_cy = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    return torch.stack((pred_cx - 0.5 * (pred_w - 1), pred_cy - 0.5 * (pred_h - 1),
                        pred_cx + 0.5 * (pred_w - 1), pred_cy + 0.5 * (pred_h - 1)), dim=1)


def centerness(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of anchor centres in boxes, ``(N,)``."""
    anchors_cx = (anchors[:, 2] + anchors[:, 0]) / 2
    anchors_cy = (anchors[:, 3] + anchors[:, 1]) / 2
    left_right = torch.stack([anchors_cx - boxes[:, 0], boxes[:, 2] - anchors_cx], dim=1)
    top_bottom = torch.stack([anchors_cy - boxes[:, 1], boxes[:, 3] - anchors_cy], dim=1)
    return torch.sqrt((left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
                      * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]))


def targets_for(anchors: torch.Tensor, matched_gt: torch.Tensor, gt_boxes: torch.Tensor,
                convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets ``(B, A, 4)`` and centerness ``(B, A)`` (zeros where ``matched_gt < 0``).

    anchors ``(A, 4)`` or ``(B, A, 4)``, matched_gt ``(B, A)`` int64, gt_boxes ``(B, G, 4)`` fp32.
    Elementwise over every anchor (background ones encode box 0 and are zeroed by ``torch.where``): no
    data-dependent shapes, so fake/meta tensors and ``torch.compile(fullgraph=True)`` trace it.
    """
    batch, num_anchors = matched_gt.shape
    flat_anchors = anchors.expand(batch, num_anchors, 4).reshape(-1, 4)
    matched = matched_gt.reshape(-1)
    positive = matched >= 0
    if gt_boxes.shape[1] == 0:  # no box to gather: every anchor is background (matched_gt is all -1)
        return (torch.zeros((batch, num_anchors, 4), dtype=torch.float32, device=matched.device),
                torch.zeros((batch, num_anchors), dtype=torch.float32, device=matched.device))
    index = matched.clamp(min=0).view(batch, num_anchors, 1).expand(batch, num_anchors, 4)
    boxes = torch.gather(gt_boxes, 1, index).reshape(-1, 4)
    codes = encode(boxes, flat_anchors, convention)
    centers = centerness(decode_glip(codes, flat_anchors) if convention == "glip" else boxes, flat_anchors)
    regression = torch.where(positive[:, None], codes, 0.0)
    centers = torch.where(positive, centers, 0.0)
    return regression.view(batch, num_anchors, 4), centers.view(batch, num_anchors)
