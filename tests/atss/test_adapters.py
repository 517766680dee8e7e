"""The mmdetection-shaped assigner and the GLIP prepare_targets drop-in.

The mmdetection cases and expected outputs are those of mmdetection's own unit test,
tests/test_models/test_task_modules/test_assigners/test_atss_assigner.py (open-mmlab/mmdetection),
run here through duck-typed instance objects (mmdetection is not installed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from fiber_kernels.atss.adapters import MMDET_INF, FusedATSSAssigner, GLIPATSSTargets

from ._cases import TINY9, oracle_assign, pyramid, random_boxes

MMDET_PRIORS = torch.tensor([[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [32, 32, 38, 42]], dtype=torch.float32)
MMDET_PRIORS_IGNORE_CASE = torch.tensor([[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [30, 32, 40, 42]],
                                        dtype=torch.float32)
MMDET_GT = torch.tensor([[0, 0, 10, 9], [0, 10, 10, 19]], dtype=torch.float32)
MMDET_LABELS = torch.tensor([2, 3])
BACKENDS = ["torch", "triton", "cpp"]


def _assign(backend, priors, gt_bboxes, gt_labels, num_level, ignore=None):
    assigner = FusedATSSAssigner(topk=9, backend=backend)
    ignore_instances = None if ignore is None else SimpleNamespace(bboxes=ignore)
    return assigner.assign(SimpleNamespace(priors=priors), num_level,
                           SimpleNamespace(bboxes=gt_bboxes, labels=gt_labels), ignore_instances)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmdet_atss_assigner(backend: str) -> None:
    if backend == "cpp":
        pytest.importorskip("fiber_kernels._C")
    result = _assign(backend, MMDET_PRIORS, MMDET_GT, MMDET_LABELS, [4])
    assert len(result.gt_inds) == 4 and len(result.labels) == 4
    assert result.gt_inds.tolist() == [1, 0, 0, 0]
    assert result.labels.tolist() == [2, -1, -1, -1]
    assert result.max_overlaps[0].item() == pytest.approx(90 / 100)
    assert result.max_overlaps[1:].tolist() == [-MMDET_INF] * 3  # mmdetection's -INF for unassigned priors


def test_mmdet_atss_assigner_with_ignore() -> None:
    # ignore_iof_thr keeps its default -1 in mmdetection's test, so the ignore box changes nothing
    result = _assign("auto", MMDET_PRIORS_IGNORE_CASE, MMDET_GT, MMDET_LABELS, [4],
                     ignore=torch.tensor([[30.0, 30.0, 40.0, 40.0]]))
    assert result.gt_inds.tolist() == [1, 0, 0, 0]


def test_mmdet_atss_assigner_with_empty_gt() -> None:
    result = _assign("auto", MMDET_PRIORS, torch.empty(0, 4), torch.empty(0), [4])
    assert result.gt_inds.tolist() == [0, 0, 0, 0]
    assert result.max_overlaps.tolist() == [0.0] * 4 and result.labels.tolist() == [-1] * 4


@pytest.mark.parametrize("ignore", [None, torch.tensor([[30.0, 30.0, 40.0, 40.0]])])
def test_mmdet_atss_assigner_with_empty_boxes(ignore) -> None:
    result = _assign("auto", torch.empty(0, 4), MMDET_GT, MMDET_LABELS, [0], ignore=ignore)
    assert len(result.gt_inds) == 0
    assert tuple(result.labels.shape) == (0,)


def test_mmdet_atss_assigner_with_empty_boxes_and_gt() -> None:
    result = _assign("auto", torch.empty(0, 4), torch.empty(0, 4), torch.empty(0), [0])
    assert len(result.gt_inds) == 0


def test_mmdet_unsupported_options_raise() -> None:
    with pytest.raises(NotImplementedError, match="alpha"):
        FusedATSSAssigner(topk=9, alpha=0.8)
    with pytest.raises(NotImplementedError, match="iou_calculator"):
        FusedATSSAssigner(topk=9, iou_calculator=dict(type="BboxOverlaps2D_GLIP"))
    assigner = FusedATSSAssigner(topk=9, ignore_iof_thr=0.5)
    with pytest.raises(NotImplementedError, match="ignore_iof_thr"):
        assigner.assign(SimpleNamespace(priors=MMDET_PRIORS), [4],
                        SimpleNamespace(bboxes=MMDET_GT, labels=MMDET_LABELS),
                        SimpleNamespace(bboxes=torch.tensor([[30.0, 30.0, 40.0, 40.0]])))


class BoxList:
    """The part of maskrcnn-benchmark's BoxList that prepare_targets reads."""

    def __init__(self, bbox: torch.Tensor, **fields: torch.Tensor) -> None:
        self.bbox, self.mode, self._fields = bbox, "xyxy", fields

    def get_field(self, name: str) -> torch.Tensor:
        return self._fields[name]


def _glip_encode(box: list[float], anchor: list[float]) -> list[float]:
    """GLIP's BoxCoder.encode for one pair, in float64 Python arithmetic."""
    import math
    ew, eh = anchor[2] - anchor[0] + 1, anchor[3] - anchor[1] + 1
    gw, gh = box[2] - box[0] + 1, box[3] - box[1] + 1
    ecx, ecy = (anchor[2] + anchor[0]) / 2, (anchor[3] + anchor[1]) / 2
    gcx, gcy = (box[2] + box[0]) / 2, (box[3] + box[1]) / 2
    return [10 * (gcx - ecx) / ew, 10 * (gcy - ecy) / eh, 5 * math.log(gw / ew), 5 * math.log(gh / eh)]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_glip_prepare_targets_drop_in(backend: str) -> None:
    gen = torch.Generator().manual_seed(5)
    anchors, sizes = pyramid(TINY9, 9)
    anchors = anchors + torch.rand(anchors.shape[0], 1, generator=gen) * 0.37  # no distance ties
    levels = list(torch.split(anchors, sizes))
    counts = [3, 0, 2]
    boxes = random_boxes(3, 3, 32.0, 32.0, gen, max_size=30.0)
    targets = [BoxList(boxes[b, :n], labels=torch.arange(1, n + 1) * 7) for b, n in enumerate(counts)]
    positive_map = torch.rand(sum(counts), 6, generator=gen)
    # the oracle's statistics are fp32 (GLIP's); triton sums them in float64 (no IoU near a threshold here)
    preparer = GLIPATSSTargets(topk=9, anchors_per_location=9, backend=backend,
                               statistics="fp32" if backend == "torch" else "float64")
    cls_labels, reg_targets, token_labels, *rest = preparer.prepare_targets(
        targets, [[BoxList(level) for level in levels]] * 3, positive_map=positive_map)
    assert rest == [[], [], [], []]
    offset = 0
    for b, n in enumerate(counts):
        no_match = torch.full((anchors.shape[0],), -1)
        matched = oracle_assign(anchors, sizes, boxes[b, :n], 9, 9, "glip") if n else no_match
        assert cls_labels[b].tolist() == [7 * (m + 1) if m >= 0 else 0 for m in matched.tolist()]
        if n:
            want = torch.tensor([_glip_encode(boxes[b, max(m, 0)].tolist(), anchors[a].tolist())
                                 for a, m in enumerate(matched.tolist())], dtype=torch.float64)
            torch.testing.assert_close(reg_targets[b].double(), want, rtol=1e-5, atol=1e-5)
        else:
            assert bool((reg_targets[b] == 0).all())
        unmatched = torch.zeros(6)
        unmatched[-1] = 1
        want_tokens = torch.stack([positive_map[offset + m] if m >= 0 else unmatched for m in matched.tolist()])
        assert torch.equal(token_labels[b], want_tokens)
        offset += n
    assert sum(int((labels > 0).sum()) for labels in cls_labels) > 5


def test_glip_prepare_targets_rejects_other_modes() -> None:
    target = BoxList(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), labels=torch.tensor([1]))
    target.mode = "xywh"
    anchors = [[BoxList(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))]]
    with pytest.raises(ValueError, match="targets must be xyxy box lists, got mode 'xywh'"):
        GLIPATSSTargets().prepare_targets([target], anchors)
    with pytest.raises(NotImplementedError, match="proj_tokens"):
        GLIPATSSTargets().prepare_targets([target], anchors, proj_tokens=torch.zeros(1, 2))
