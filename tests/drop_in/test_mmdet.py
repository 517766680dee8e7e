"""``fiber_kernels.patch.mmdet``'s ``FusedATSSAssigner`` against mmdetection's own ``ATSSAssigner``.

mmdet 3.x needs mmcv's compiled ops at import; with mmcv-lite (what installs from PyPI without a
compile) ``_mmcv_ops_standin`` answers the ``mmcv.ops`` imports, and everything compared here is
mmdet's real code: the registry, ``ATSSAssigner``, ``BboxOverlaps2D`` and ``BboxOverlaps2D_GLIP``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from . import _mmcv_ops_standin
from ._compare import require

pytestmark = pytest.mark.drop_in
MMDET_LINE = "pip install mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0"
require("mmdet", "mmdet", MMDET_LINE)
require("mmcv", "mmcv-lite", MMDET_LINE)
_mmcv_ops_standin.install()
require("mmdet.models", "mmdet", MMDET_LINE)

from fiber_kernels.atss.api import cpp_available  # noqa: E402
from fiber_kernels.atss.reference import center_distances, nearest_per_level  # noqa: E402
from fiber_kernels.patch.mmdet import FusedATSSAssigner  # noqa: E402
from mmdet.registry import TASK_UTILS  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

STRIDES = (8, 16, 32, 64, 128)
CALCULATORS = ["BboxOverlaps2D", "BboxOverlaps2D_GLIP"]


def _pair(calculator: str = "BboxOverlaps2D", backend: str = "torch",
          **kwargs: object) -> tuple[object, FusedATSSAssigner]:
    """mmdet's ATSSAssigner and ours, both built from config dicts through mmdet's TASK_UTILS."""
    config = dict(topk=9, iou_calculator=dict(type=calculator), **kwargs)
    ours = TASK_UTILS.build(dict(type="FusedATSSAssigner", backend=backend, **config))
    assert isinstance(ours, FusedATSSAssigner)
    return TASK_UTILS.build(dict(type="ATSSAssigner", **config)), ours


def _pyramid(height: int, width: int) -> tuple[torch.Tensor, list[int]]:
    """ATSS anchors: one 8·stride square per location of P3-P7, centres on the stride grid (mmdet's offset 0)."""
    levels = []
    for stride in STRIDES:
        ys, xs = torch.meshgrid(torch.arange(-(-height // stride)), torch.arange(-(-width // stride)), indexing="ij")
        cx, cy, half = xs.flatten() * stride, ys.flatten() * stride, 4 * stride
        levels.append(torch.stack([cx - half, cy - half, cx + half, cy + half], 1).float())
    return torch.cat(levels), [len(level) for level in levels]


def _boxes(count: int, height: int, width: int, generator: torch.Generator, integer: bool) -> torch.Tensor:
    """COCO-like boxes: many small, some large; ``integer`` rounds the corners (COCO pixel boxes)."""
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 0.8
    size = torch.rand(count, 2, generator=generator) ** 2 * torch.tensor([width, height]) * 0.6 + 4
    boxes = torch.cat([corner, (corner + size).minimum(torch.tensor([width - 1.0, height - 1.0]))], 1)
    return boxes.round() if integer else boxes


def _run(assigner: object, priors: torch.Tensor, sizes: list[int], boxes: torch.Tensor,
         ignore: torch.Tensor | None = None) -> object:
    labels = torch.arange(len(boxes)) % 7
    return assigner.assign(InstanceData(priors=priors), sizes, InstanceData(bboxes=boxes, labels=labels),
                           None if ignore is None else InstanceData(bboxes=ignore))


def _assert_same(expected: object, got: object) -> None:
    assert torch.equal(got.gt_inds, expected.gt_inds)
    assert torch.equal(got.labels, expected.labels)
    torch.testing.assert_close(got.max_overlaps, expected.max_overlaps, rtol=0, atol=1e-6)
    assert got.num_gts == expected.num_gts


PRIORS_4 = [[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [32, 32, 38, 42]]
BOXES_2 = [[0, 0, 10, 9], [0, 10, 10, 19]]
# The inputs of mmdet's tests/test_models/test_task_modules/test_assigners/test_atss_assigner.py:
# (priors, boxes, ignore boxes, levels, expected gt_inds).
MMDET_CASES = {
    "basic": (PRIORS_4, BOXES_2, None, [4], [1, 0, 0, 0]),
    "with_ignore": ([*PRIORS_4[:3], [30, 32, 40, 42]], BOXES_2, [[30, 30, 40, 40]], [4], [1, 0, 0, 0]),
    "empty_gt": (PRIORS_4, [], None, [4], [0, 0, 0, 0]),
    "empty_boxes": ([], BOXES_2, None, [0], []),
    "empty_boxes_and_ignore": ([], BOXES_2, [[30, 30, 40, 40]], [0], []),
    "empty_boxes_and_gt": ([], [], None, [0], []),
}


# with_ignore at 0.5 ignores one of a level's 4 priors: the fewer-than-topk warning, same result.
@pytest.mark.filterwarnings("ignore:FusedATSSAssigner. level 0 keeps 3 of 4:RuntimeWarning")
@pytest.mark.parametrize("ignore_iof_thr", [-1, 0.5])
@pytest.mark.parametrize("case", sorted(MMDET_CASES))
def test_mmdet_unit_test_cases(case: str, ignore_iof_thr: float) -> None:
    priors, boxes, ignore, levels, expected = MMDET_CASES[case]
    reference, ours = _pair(ignore_iof_thr=ignore_iof_thr)
    tensors = [torch.tensor(v, dtype=torch.float32).reshape(-1, 4) for v in (priors, boxes)]
    ignore = None if ignore is None else torch.tensor(ignore, dtype=torch.float32)
    expected_result = _run(reference, *tensors[:1], levels, tensors[1], ignore)
    got = _run(ours, *tensors[:1], levels, tensors[1], ignore)
    _assert_same(expected_result, got)
    if ignore_iof_thr < 0:
        assert got.gt_inds.tolist() == expected


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=pytest.mark.skipif(
    not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel"))])
@pytest.mark.parametrize("calculator", CALCULATORS)
def test_random_pyramids_float_boxes_equal(calculator: str, backend: str) -> None:
    # Real-valued boxes: no two anchor centres are equally far from a box centre, so the
    # candidates are unique and every field must match (cpp: the regular-pyramid path, fp32 statistics).
    reference, ours = _pair(calculator, backend)
    priors, sizes = _pyramid(256, 320)
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        boxes = _boxes(10, 256, 320, generator, integer=False)
        _assert_same(_run(reference, priors, sizes, boxes), _run(ours, priors, sizes, boxes))


@pytest.mark.parametrize("calculator", CALCULATORS)
def test_random_pyramids_with_ignore_boxes_equal(calculator: str) -> None:
    reference, ours = _pair(calculator, ignore_iof_thr=0.5)
    priors, sizes = _pyramid(256, 320)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        boxes = _boxes(8, 256, 320, generator, integer=False)
        corner = torch.rand(2, 2, generator=generator) * 150
        ignore = torch.cat([corner, corner + 100 + torch.rand(2, 2, generator=generator) * 60], 1)  # hold P3 priors
        expected = _run(reference, priors, sizes, boxes, ignore)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # every level keeps >= topk priors here
            got = _run(ours, priors, sizes, boxes, ignore)
        assert bool((expected.gt_inds == -1).any())
        _assert_same(expected, got)


def test_integer_boxes_differ_only_through_distance_ties() -> None:
    # Integer (COCO pixel) boxes put box centres on half-pixels and anchors on the stride grid:
    # equally distant anchors at a level's k-th place are common, and torch.topk keeps an
    # unspecified one of them (we keep the lower index). Where mmdet's candidate sets equal ours
    # for every box, gt_inds must be equal; elsewhere the differing anchors are counted.
    reference, ours = _pair()
    priors, sizes = _pyramid(256, 320)
    generator = torch.Generator().manual_seed(2)
    same_images = 0
    for _ in range(20):
        boxes = _boxes(3, 256, 320, generator, integer=True)
        # mmdet's distances (torch's fp32 sqrt) for its topk; ours are IEEE-rounded, as the kernels
        distances = (((priors[:, None, :2] + priors[:, None, 2:]) / 2.0
                      - (boxes[None, :, :2] + boxes[None, :, 2:]) / 2.0).pow(2).sum(-1).sqrt())
        theirs = torch.cat([distances[start:start + n].topk(min(9, n), dim=0, largest=False).indices + start
                            for start, n in zip([0, *torch.tensor(sizes).cumsum(0).tolist()[:-1]], sizes,
                                                strict=True)]).t().sort(1).values
        mine = nearest_per_level(center_distances(priors, boxes), sizes, 9).sort(1).values
        expected, got = _run(reference, priors, sizes, boxes), _run(ours, priors, sizes, boxes)
        if torch.equal(theirs, mine):
            same_images += 1
            _assert_same(expected, got)
    assert same_images >= 3  # the check above ran on enough images


def test_config_variants_honoured_or_refused() -> None:
    scaled = TASK_UTILS.build(dict(type="FusedATSSAssigner", topk=9,
                                   iou_calculator=dict(type="BboxOverlaps2D", scale=512.0)))
    assert scaled.convention == "mmdet_fp32"  # scale without dtype has no effect in mmdet either
    glip = TASK_UTILS.build(dict(type="FusedATSSAssigner", topk=9, iou_calculator=dict(type="BboxOverlaps2D_GLIP")))
    assert glip.convention == "glip_fp32"
    assert FusedATSSAssigner(topk=9, statistics="float64").convention == "mmdet"
    with pytest.raises(ValueError, match="statistics must be one of"):
        FusedATSSAssigner(topk=9, statistics="fp16")
    with pytest.raises(ValueError, match="dtype='fp16' computes IoU in half precision"):
        FusedATSSAssigner(topk=9, iou_calculator=dict(type="BboxOverlaps2D", dtype="fp16", scale=512.0))
    with pytest.raises(ValueError, match="iou_calculator type must be one of"):
        FusedATSSAssigner(topk=9, iou_calculator=dict(type="BboxOverlaps3D"))
    with pytest.raises(ValueError, match="alpha must be None"):
        FusedATSSAssigner(topk=9, alpha=0.8)


@pytest.mark.filterwarnings("ignore:FusedATSSAssigner. level [0-3] keeps 0:RuntimeWarning")
def test_a_level_emptied_by_ignore_boxes_warns() -> None:
    priors, sizes = _pyramid(64, 64)  # P7 has one anchor: ignoring it leaves the level empty
    boxes = torch.tensor([[4.0, 4.0, 40.0, 30.0]])
    _, ours = _pair(ignore_iof_thr=0.5)
    with pytest.warns(RuntimeWarning, match="level 4 keeps 0 of 1 priors"):
        _run(ours, priors, sizes, boxes, ignore=torch.tensor([[-600.0, -600.0, 600.0, 600.0]]))
