"""The C++ CPU kernel's regular-pyramid path (csrc/atss/atss_grid.h: each box chooses its k nearest anchors
from a window of locations) against the per-image reference, which scans every anchor: random regular
pyramids of odd sizes, 1 and 9 anchors per location, boxes at and beyond the borders, integer boxes (centres
on grid midpoints: distance ties), and anchors that are not a grid (the general scan)."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.reference import atss_assign_reference

from ._cases import pyramid, random_boxes
from .conftest import assert_same

pytestmark = pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel")


def random_levels(gen: torch.Generator, count: int) -> list[tuple[int, int, float, float]]:
    """``count`` levels of odd and tiny sizes (1 x 1, 1 x n, n x 1 included) with strides 4-64."""
    levels = []
    for level in range(count):
        height, width = (int(v) for v in torch.randint(1, 12, (2,), generator=gen))
        stride = 4.0 * 2 ** level
        levels.append((height, width, stride, stride * float(torch.randint(2, 9, (1,), generator=gen))))
    return levels


def border_boxes(width: float, height: float) -> torch.Tensor:
    """Boxes on the image corners and edges, beyond them, huge, and with centres on grid lines."""
    return torch.tensor([[0.0, 0.0, 10.0, 10.0], [width - 12.0, height - 9.0, width, height],
                         [-40.0, -30.0, -5.0, -2.0], [width + 3.0, 10.0, width + 50.0, 90.0],
                         [-500.0, -500.0, width + 500.0, height + 500.0], [0.0, 0.0, width, height],
                         [8.0, 8.0, 24.0, 24.0], [4.0, 0.0, 20.0, height]])


@pytest.mark.parametrize("convention", ["glip", "mmdet"])
@pytest.mark.parametrize("per_location", [1, 9])
@pytest.mark.parametrize("seed", range(4))
def test_random_regular_pyramid_matches_full_scan(seed: int, per_location: int, convention: str) -> None:
    gen = torch.Generator().manual_seed(seed)
    levels = random_levels(gen, 1 + seed % 4)
    anchors, sizes = pyramid(levels, per_location)
    width = max(w * s for _, w, s, _ in levels)
    height = max(h * s for h, _, s, _ in levels)
    boxes = torch.cat([random_boxes(1, 12, width, height, gen, max_size=max(width, height)),
                       random_boxes(1, 6, width, height, gen, max_size=max(width, height)).round(),
                       border_boxes(width, height)[None]], dim=1).expand(2, -1, -1).clone()
    mask = torch.rand(boxes.shape[:2], generator=gen) > 0.2
    for topk in (1, 4, 9):
        want = atss_assign_reference(anchors, sizes, boxes, mask, topk=topk, anchors_per_location=per_location,
                                     convention=convention)
        got = atss_assign(anchors, sizes, boxes, mask, topk=topk, anchors_per_location=per_location,
                          convention=convention, backend="cpp")
        assert_same(got, want)


def test_fiber_pyramid_integer_boxes_matches_full_scan() -> None:
    """800 x 1344, P3-P7: integer boxes put centres on anchor-grid midpoints (2- and 4-way distance ties)."""
    gen = torch.Generator().manual_seed(11)
    anchors, sizes = pyramid([(100, 168, 8.0, 64.0), (50, 84, 16.0, 128.0), (25, 42, 32.0, 256.0),
                              (13, 21, 64.0, 512.0), (7, 11, 128.0, 1024.0)])
    boxes = random_boxes(2, 40, 1344.0, 800.0, gen, min_size=4.0, max_size=700.0).round()
    boxes[:, :4] = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 40.0, 24.0], [1328.0, 784.0, 1344.0, 800.0],
                                 [-64.0, 400.0, 0.0, 464.0]])
    want = atss_assign_reference(anchors, sizes, boxes)
    assert int((want[0] >= 0).sum()) > 500
    assert_same(atss_assign(anchors, sizes, boxes, backend="cpp"), want)


@pytest.mark.parametrize("how", ["shuffled", "jittered", "per_image"])
def test_irregular_anchors_match_full_scan(how: str) -> None:
    """Anchors that are no grid (shuffled, centres moved by up to a stride, a different grid per image)."""
    gen = torch.Generator().manual_seed(5)
    anchors, sizes = pyramid([(9, 13, 8.0, 32.0), (5, 7, 16.0, 64.0), (3, 4, 32.0, 128.0)])
    if how == "shuffled":
        parts = torch.split(anchors, sizes)
        anchors = torch.cat([part[torch.randperm(part.shape[0], generator=gen)] for part in parts])
    elif how == "jittered":
        anchors = anchors + (torch.rand(anchors.shape[0], 1, generator=gen) * 16 - 8).repeat(1, 4)
    else:
        anchors = torch.stack([anchors, anchors * 0.75 + 3.0])
    boxes = torch.cat([random_boxes(2, 10, 104.0, 72.0, gen, max_size=60.0),
                       border_boxes(104.0, 72.0)[None].expand(2, -1, -1)], dim=1)
    want = atss_assign_reference(anchors, sizes, boxes)
    assert_same(atss_assign(anchors, sizes, boxes, backend="cpp"), want)
