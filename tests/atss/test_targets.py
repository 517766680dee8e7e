"""atss_targets against the box coders written out per anchor in float64 (GLIP's BoxCoder with weights
10, 10, 5, 5 and +1 widths; mmdetection's DeltaXYWHBBoxCoder with stds 0.1, 0.1, 0.2, 0.2) and the
geometric centerness of the anchor centre in its box."""

from __future__ import annotations

import math

import pytest
import torch
from fiber_kernels.atss import atss_assign, atss_targets

from ._cases import SMALL, pyramid, random_boxes


def _encode(box: list[float], anchor: list[float], convention: str) -> list[float]:
    one = 1.0 if convention == "glip" else 0.0
    aw, ah = anchor[2] - anchor[0] + one, anchor[3] - anchor[1] + one
    bw, bh = box[2] - box[0] + one, box[3] - box[1] + one
    dx = ((box[0] + box[2]) / 2 - (anchor[0] + anchor[2]) / 2) / aw
    dy = ((box[1] + box[3]) / 2 - (anchor[1] + anchor[3]) / 2) / ah
    return [dx / 0.1, dy / 0.1, math.log(bw / aw) / 0.2, math.log(bh / ah) / 0.2]


def _centerness(box: list[float], anchor: list[float]) -> float:
    cx, cy = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    left, top, right, bottom = cx - box[0], cy - box[1], box[2] - cx, box[3] - cy
    return math.sqrt(min(left, right) / max(left, right) * min(top, bottom) / max(top, bottom))


@pytest.mark.parametrize("convention", ["glip", "mmdet"])
def test_targets_match_box_coder(convention: str) -> None:
    gen = torch.Generator().manual_seed(11)
    anchors, sizes = pyramid(SMALL)
    boxes = random_boxes(2, 6, 96.0, 64.0, gen)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    matched, _ = atss_assign(anchors, sizes, boxes, mask, convention=convention, backend="torch")
    regression, centerness = atss_targets(anchors, matched, boxes, convention=convention)
    assert regression.shape == (2, anchors.shape[0], 4) and centerness.shape == (2, anchors.shape[0])
    positive = matched >= 0
    assert int(positive.sum()) > 10
    assert bool((regression[~positive] == 0).all()) and bool((centerness[~positive] == 0).all())
    for b, a in positive.nonzero().tolist():
        box, anchor = boxes[b, matched[b, a]].tolist(), anchors[a].tolist()
        want = torch.tensor(_encode(box, anchor, convention), dtype=torch.float64)
        torch.testing.assert_close(regression[b, a].double(), want, rtol=1e-5, atol=1e-5)
        # GLIP decodes the targets back to boxes first: the round trip costs a few fp32 ulps
        assert centerness[b, a].item() == pytest.approx(_centerness(box, anchor), rel=1e-4, abs=1e-5)
        assert 0.0 < centerness[b, a].item() <= 1.0


def test_targets_with_per_image_anchors() -> None:
    anchors = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[2.0, 2.0, 12.0, 12.0]]])
    boxes = torch.tensor([[[1.0, 1.0, 9.0, 9.0]], [[1.0, 1.0, 9.0, 9.0]]])
    regression, centerness = atss_targets(anchors, torch.tensor([[0], [0]]), boxes)
    assert regression[0].tolist()[0] == pytest.approx(_encode([1, 1, 9, 9], [0, 0, 10, 10], "glip"), rel=1e-5)
    assert regression[1].tolist()[0] == pytest.approx(_encode([1, 1, 9, 9], [2, 2, 12, 12], "glip"), rel=1e-5)
    assert centerness[0, 0].item() == pytest.approx(1.0, rel=1e-5)
    assert centerness[1, 0].item() == pytest.approx(_centerness([1, 1, 9, 9], [2, 2, 12, 12]), rel=1e-4)
