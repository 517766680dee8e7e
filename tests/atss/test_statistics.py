"""Threshold statistics as a convention setting: ``"glip"`` / ``"mmdet"`` sum them in float64 (ours),
``"glip_fp32"`` / ``"mmdet_fp32"`` take the mean as the originals' fp32 ``mean(0)``. The C++ kernel's copy
of torch's CPU order of additions (csrc/atss/torch_cpu_sum.h) against ``torch.sum`` itself, the C++ kernel
against the reference (which calls ``mean(0)`` / ``std(0)`` as GLIP and mmdetection do), the dispatch of the
fp32 conventions, and the count of anchors the two precisions assign differently on COCO-like boxes."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels import BackendNotSupportedError
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.reference import (
    atss_assign_reference,
    center_distances,
    nearest_per_level,
    pairwise_iou,
    threshold,
)

from ._cases import FIBER, pyramid
from .conftest import assert_same

needs_cpp = pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel")


def coco_like_boxes(images: int, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(B, G, 4)`` and mask as a COCO image resized to 800 x 1067 gives them: corners on the 0.01 px
    grid of 640 x 480 annotations, scaled by 5/3; sizes log-uniform 4-400 px; 1..count boxes per image."""
    size = torch.exp(torch.rand(images, count, 2, generator=gen) * (torch.log(torch.tensor(400.0)) - 1.386) + 1.386)
    corner = torch.rand(images, count, 2, generator=gen) * (torch.tensor([640.0, 480.0]) - size).clamp(min=0)
    boxes = (torch.cat([corner, corner + size], -1) * 100).round() / 100 * (5.0 / 3.0)
    mask = torch.arange(count)[None] < torch.randint(1, count + 1, (images, 1), generator=gen)
    return boxes.float(), mask


def test_torch_cpu_sum_order_matches_torch_sum(atss_emu) -> None:
    """Every (C, G) shape class: G = 1 (one contiguous reduction), 2-7 (blocks of 4), >= 8 (blocks of 32 and
    the rest), C below and above 8 and 16 * 16; columns of cubed uniforms, whose sums round often."""
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for rows in (1, 3, 7, 8, 9, 17, 45, 81, 260, 405):
        for columns in (1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 40, 70):
            values = torch.rand(rows, columns, generator=gen) ** 3
            want = values.sum(0)
            for column in range(columns):
                got = atss_emu.torch_cpu_column_sum(values[:, column].contiguous(), columns, column)
                assert got == float(want[column]), (rows, columns, column, got, float(want[column]))
                checked += 1
    assert checked == 10 * sum((1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 40, 70))


@needs_cpp
@pytest.mark.parametrize("convention", ["glip_fp32", "mmdet_fp32"])
def test_cpp_fp32_statistics_match_reference(convention: str) -> None:
    """The C++ kernel with fp32 statistics equals the reference's torch mean(0) + std(0), per-image box
    counts 1..40 (every column class of the (C, G) tensor)."""
    gen = torch.Generator().manual_seed(1)
    anchors, sizes = pyramid(FIBER)
    boxes, mask = coco_like_boxes(6, 40, gen)
    mask[0] = False
    mask[0, 0] = True  # one box: G = 1
    want = atss_assign_reference(anchors, sizes, boxes, mask, convention=convention)
    assert_same(atss_assign(anchors, sizes, boxes, mask, convention=convention, backend="cpp"), want)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_fp32_conventions_refused_by_float64_backends(backend: str) -> None:
    anchors, sizes = pyramid([(2, 2, 8.0, 16.0)])
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])
    with pytest.raises(BackendNotSupportedError, match="fp32"):
        atss_assign(anchors, sizes, boxes, convention="glip_fp32", backend=backend)


def differing_thresholds(images: int, count: int, seed: int) -> tuple[int, int, int]:
    """(boxes, boxes whose fp32 and float64 thresholds differ, largest difference in fp32 ulps) of COCO-like
    images on the FIBER pyramid, GLIP's boxes (the thresholds of one box, as ``assign_image`` takes them)."""
    gen = torch.Generator().manual_seed(seed)
    anchors, sizes = pyramid(FIBER)
    boxes, mask = coco_like_boxes(images, count, gen)
    total = differ = widest = 0
    for b in range(images):
        valid = boxes[b, mask[b]]
        candidates = nearest_per_level(center_distances(anchors, valid), sizes, 9)
        ious = pairwise_iou(anchors, valid, "glip")[candidates, torch.arange(valid.shape[0])[:, None]]
        ours, theirs = threshold(ious), threshold(ious, fp32_statistics=True)
        ulps = (ours.view(torch.int32) - theirs.view(torch.int32)).abs()
        total, differ, widest = total + valid.shape[0], differ + int((ulps > 0).sum()), max(widest, int(ulps.max()))
    return total, differ, widest


def test_fp32_and_float64_thresholds_differ_by_ulps_on_many_boxes() -> None:
    """The two settings give thresholds a few fp32 ulps apart (the fp32 sum's rounding errors), and different
    on many boxes (10 of 22 here), so an IoU within those ulps would flip (test_count_differing_anchors...)."""
    total, differ, widest = differing_thresholds(6, 12, seed=2)
    assert total > 10 and differ > 0 and widest <= 4, (total, differ, widest)


def differing_anchors(images: int, count: int, seed: int, integer: bool = False) -> dict[str, int]:
    """Anchors (of images x 22400) the float64 and fp32 statistics assign differently (C++ kernel), per box
    convention, with the positives of the fp32 one; COCO-like boxes (``integer``: corners rounded)."""
    gen = torch.Generator().manual_seed(seed)
    anchors, sizes = pyramid(FIBER)
    found = {"images": images, "boxes": 0, "glip": 0, "mmdet": 0, "positives": 0}
    for _ in range(0, images, 8):
        boxes, mask = coco_like_boxes(8, count, gen)
        boxes = boxes.round() if integer else boxes
        found["boxes"] += int(mask.sum())
        for boxes_of in ("glip", "mmdet"):
            ours = atss_assign(anchors, sizes, boxes, mask, convention=boxes_of, backend="cpp")[0]
            theirs = atss_assign(anchors, sizes, boxes, mask, convention=f"{boxes_of}_fp32", backend="cpp")[0]
            found[boxes_of] += int((ours != theirs).sum())
            found["positives"] += int((theirs >= 0).sum())
    return found


@needs_cpp
def test_count_differing_anchors_on_coco_like_boxes() -> None:
    """The anchors the precision flips: at most one per 10,000 positives (printed with -s; 0 of ~1.1 M positive
    anchors in 6,000 images when measured, tests/atss/test_statistics.py::differing_anchors)."""
    found = differing_anchors(96, 12, seed=3)
    print(f"float64 vs fp32 statistics, differing anchors: {found}")
    assert found["positives"] > 5000
    assert found["glip"] + found["mmdet"] <= found["positives"] // 10000
