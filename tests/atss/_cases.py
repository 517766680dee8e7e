"""Anchor grids, box generators, the adversarial cases, and a per-box oracle written from the GLIP and
mmdetection sources (torch.topk, fp32 torch.mean / torch.std, as the originals run them)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fiber_kernels.atss.anchors import FIBER_LEVELS, pyramid  # noqa: F401 - re-exported to the tests
from fiber_kernels.atss.reference import INSIDE_MARGIN, MMDET_EPS

SMALL = [(8, 12, 8.0, 32.0), (4, 6, 16.0, 64.0), (2, 3, 32.0, 128.0)]          # 96 + 24 + 6 anchors
TINY9 = [(4, 4, 8.0, 32.0), (2, 2, 16.0, 64.0), (1, 1, 32.0, 128.0)]           # x9 anchors per location
FIBER = list(FIBER_LEVELS)                                                      # 22400 anchors, 800 x 1344


def random_boxes(batch: int, count: int, width: float, height: float, generator: torch.Generator,
                 min_size: float = 2.0, max_size: float = 80.0) -> torch.Tensor:
    """Boxes ``(B, G, 4)`` with random corners and sizes inside ``width x height`` (continuous: no ties)."""
    wh = torch.rand(batch, count, 2, generator=generator) * (max_size - min_size) + min_size
    xy = torch.rand(batch, count, 2, generator=generator) * (torch.tensor([width, height]) - wh).clamp(min=1)
    return torch.cat([xy, xy + wh], -1).float()


@dataclass
class Case:
    name: str
    anchors: torch.Tensor
    sizes: list[int]
    gt_boxes: torch.Tensor
    gt_mask: torch.Tensor | None
    anchors_per_location: int = 1


def adversarial_cases() -> list[Case]:
    """The issue's edge cases on small pyramids (cheap under the Triton interpreter)."""
    gen = torch.Generator().manual_seed(1)
    anchors, sizes = pyramid(SMALL)
    anchors9, sizes9 = pyramid(TINY9, 9)
    few, few_sizes = pyramid([(3, 3, 8.0, 16.0), (1, 2, 16.0, 32.0), (0, 0, 32.0, 64.0)])  # 9, 2, 0 anchors
    one = torch.tensor([[[20.0, 10.0, 50.0, 40.0]]])
    duplicate = torch.tensor([[20.0, 12.0, 60.0, 44.0]]).repeat(4, 1)[None]
    zero_area = torch.tensor([[[30.0, 30.0, 30.0, 50.0], [10.0, 20.0, 40.0, 20.0], [44.0, 28.0, 44.0, 28.0],
                               [8.0, 8.0, 40.0, 40.0]]])
    outside = torch.tensor([[[-60.0, -40.0, -10.0, -5.0], [90.0, 50.0, 200.0, 120.0], [-20.0, -20.0, 140.0, 90.0],
                             [94.0, 2.0, 96.0, 60.0]]])
    # centres on lattice points: equidistant from 2 or 4 anchor centres of every level (distance ties)
    distance_ties = torch.tensor([[[16.0, 16.0, 48.0, 48.0], [24.0, 8.0, 40.0, 40.0], [0.0, 0.0, 64.0, 64.0]]])
    # one box holding every candidate of the first level whole: equal IoUs, std 0 (IoU ties)
    iou_ties = torch.tensor([[[0.0, 0.0, 96.0, 64.0], [33.0, 1.0, 63.0, 31.0]]])
    padded = random_boxes(3, 6, 96.0, 64.0, gen)
    padded_mask = torch.tensor([[True] * 6, [True, True, False, False, False, False], [False] * 6])
    padded[~padded_mask] = torch.tensor([0.0, 0.0, -1.0, -1.0])  # padding is never validated or used
    return [
        Case("no_boxes", anchors, sizes, torch.zeros(2, 0, 4), None),
        Case("all_padding", anchors, sizes, random_boxes(2, 3, 96.0, 64.0, gen), torch.zeros(2, 3, dtype=torch.bool)),
        Case("one_box", anchors, sizes, one, None),
        Case("hundred_boxes", anchors[:96], sizes[:1], random_boxes(1, 100, 96.0, 64.0, gen, max_size=40.0), None),
        Case("duplicate_boxes", anchors, sizes, duplicate, None),
        Case("zero_area_boxes", anchors, sizes, zero_area, None),
        Case("boxes_outside_image", anchors, sizes, outside, None),
        Case("levels_smaller_than_k", few, few_sizes, torch.tensor([[[2.0, 2.0, 14.0, 20.0], [0.0, 0.0, 30.0, 30.0]]]),
             None),
        Case("anchors_per_location_9", anchors9, sizes9, random_boxes(2, 3, 32.0, 32.0, gen, max_size=30.0), None, 9),
        Case("distance_ties", anchors, sizes, distance_ties, None),
        Case("iou_ties", anchors, sizes, iou_ties, None),
        Case("padded_batch", anchors, sizes, padded, padded_mask),
        Case("per_image_anchors", torch.stack([anchors, anchors + 3.0]), sizes, random_boxes(2, 4, 96.0, 64.0, gen),
             None),
    ]


def oracle_assign(anchors: torch.Tensor, sizes: list[int], boxes: torch.Tensor, topk: int, anchors_per_location: int,
                  convention: str) -> torch.Tensor:
    """Matched box per anchor ``(A,)`` (-1 background) for one image, one box at a time, as GLIP / mmdet
    run it: torch.topk per level, fp32 torch.mean + torch.std, then the highest-IoU claim (first box on
    ties). Valid only where no two anchors are equally distant from a box centre (topk's tie order is
    unspecified) and no IoU sits within an ulp of a threshold."""
    one = 1.0 if convention == "glip" else 0.0
    acx, acy = (anchors[:, 2] + anchors[:, 0]) / 2.0, (anchors[:, 3] + anchors[:, 1]) / 2.0
    best_iou = torch.full((anchors.shape[0],), -float("inf"))
    best_box = torch.full((anchors.shape[0],), -1, dtype=torch.int64)
    for g, box in enumerate(boxes):
        inter_w = (torch.min(anchors[:, 2], box[2]) - torch.max(anchors[:, 0], box[0]) + one).clamp(min=0)
        inter_h = (torch.min(anchors[:, 3], box[3]) - torch.max(anchors[:, 1], box[1]) + one).clamp(min=0)
        inter = inter_w * inter_h
        union = ((anchors[:, 2] - anchors[:, 0] + one) * (anchors[:, 3] - anchors[:, 1] + one)
                 + (box[2] - box[0] + one) * (box[3] - box[1] + one) - inter)
        if convention == "mmdet":
            union = union.clamp(min=MMDET_EPS)
        iou = inter / union
        dist = ((acx - (box[2] + box[0]) / 2.0) ** 2 + (acy - (box[3] + box[1]) / 2.0) ** 2).sqrt()
        chosen, start = [], 0
        for size in sizes:
            k = min(topk * anchors_per_location, size)
            if k:
                chosen.append(dist[start:start + size].topk(k, largest=False).indices + start)
            start += size
        cand = torch.cat(chosen)
        thr = iou[cand].mean() + iou[cand].std()
        cx, cy = acx[cand], acy[cand]
        inside = torch.stack([cx - box[0], cy - box[1], box[2] - cx, box[3] - cy]).min(0).values
        pos = cand[(iou[cand] >= thr) & (inside > INSIDE_MARGIN)]
        better = iou[pos] > best_iou[pos]
        best_iou[pos[better]] = iou[pos[better]]
        best_box[pos[better]] = g
    return best_box
