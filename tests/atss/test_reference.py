"""The reference against a per-box oracle that runs GLIP's / mmdetection's operations as they do
(torch.topk, fp32 mean and std) on tie-free random data, and its tie rule for equal distances."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss.reference import assign_image, nearest_per_level

from ._cases import SMALL, TINY9, oracle_assign, pyramid, random_boxes


@pytest.mark.parametrize("convention", ["glip", "mmdet"])
@pytest.mark.parametrize("anchors_per_location", [1, 9])
@pytest.mark.parametrize("seed", range(4))
def test_reference_matches_glip_and_mmdet_operations(convention: str, anchors_per_location: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    levels = SMALL if anchors_per_location == 1 else TINY9
    anchors, sizes = pyramid(levels, anchors_per_location)
    width, height = levels[0][1] * levels[0][2], levels[0][0] * levels[0][2]
    # jitter the anchors so no two centres are equally distant from a box centre
    anchors = anchors + torch.rand(anchors.shape[0], 1, generator=gen) * 0.37
    boxes = random_boxes(1, 12, width, height, gen, max_size=min(width, height) * 0.8)[0]
    matched, iou = assign_image(anchors, sizes, boxes, anchors_per_location=anchors_per_location, convention=convention)
    want = oracle_assign(anchors, sizes, boxes, 9, anchors_per_location, convention)
    assert int((want >= 0).sum()) > 0
    assert torch.equal(matched, want)
    assert bool((iou[matched < 0] == 0).all()) and bool((iou[matched >= 0] > 0).all())


def test_equal_distances_go_to_the_lower_anchor_index() -> None:
    distances = torch.tensor([[3.0, 1.0], [1.0, 1.0], [2.0, 1.0], [1.0, 0.5], [2.0, 1.0], [0.5, 2.0]])
    # level 1 = rows 0-3, level 2 = rows 4-5; k = 2 per level (level 2 has only 2 rows)
    picked = nearest_per_level(distances, [4, 2], 2)
    # box 1: 0.5 at row 3, then the first of the three tied 1.0s (row 0); candidates come nearest first
    # (topk's order, which the fp32 statistics sum in), equal distances by index
    assert picked.tolist() == [[1, 3, 5, 4], [3, 0, 4, 5]]
