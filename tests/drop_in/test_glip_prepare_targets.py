"""``fiber_kernels.atss.adapters.GLIPATSSTargets`` against GLIP's ``ATSSLossComputation.prepare_targets``.

GLIP (microsoft/GLIP, ``maskrcnn_benchmark``) is not on PyPI and does not install without compiling its
CUDA ops, so nothing of it can be imported here. ``GLIPPrepareTargetsStandIn`` below is a minimal stand-in
for exactly what cannot be installed: the ATSS branch of ``ATSSLossComputation.prepare_targets``
(``maskrcnn_benchmark/modeling/rpn/loss.py``) with the pieces it calls, ``BoxList`` (bbox, mode, fields),
``cat_boxlist``, ``boxlist_iou`` (+1 widths) and the head's ``BoxCoder.encode`` (``vldyhead.py``: weights 10, 10,
5, 5), written from the
official source as its own torch calls in its own order: ``topk`` per level, ``candidate_ious.mean(0) +
candidate_ious.std(0)`` on fp32, the 0.01 centre test, the ``-INF``-filled IoU matrix and ``max(dim=1)``,
labels 0 for background and the ``[NoObj]`` token (the last) in the token labels. The shallow-contrastive
outputs (``proj_tokens``) are left out, as the drop-in refuses them.
"""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss.adapters import GLIPATSSTargets
from fiber_kernels.atss.anchors import pyramid
from fiber_kernels.atss.api import cpp_available

pytestmark = pytest.mark.drop_in
INF = 1e8
LEVELS = [(12, 16, 8.0, 32.0), (6, 8, 16.0, 64.0), (3, 4, 32.0, 128.0), (2, 2, 64.0, 256.0)]  # 128 x 96 px


class BoxList:
    """maskrcnn_benchmark's ``BoxList``: what prepare_targets reads (``bbox``, ``mode``, fields)."""

    def __init__(self, bbox: torch.Tensor, mode: str = "xyxy", **fields: torch.Tensor) -> None:
        self.bbox, self.mode, self.extra_fields = bbox, mode, dict(fields)

    def get_field(self, name: str) -> torch.Tensor:
        return self.extra_fields[name]

    def fields(self) -> list[str]:
        return list(self.extra_fields)

    def __len__(self) -> int:
        return self.bbox.shape[0]


def cat_boxlist(boxlists: list[BoxList]) -> BoxList:
    return BoxList(torch.cat([boxlist.bbox for boxlist in boxlists], dim=0))


def boxlist_iou(boxlist1: BoxList, boxlist2: BoxList) -> torch.Tensor:
    """maskrcnn_benchmark ``boxlist_iou``: ``(N, M)`` IoU with +1 on widths and heights."""
    box1, box2 = boxlist1.bbox, boxlist2.bbox
    area1 = (box1[:, 2] - box1[:, 0] + 1) * (box1[:, 3] - box1[:, 1] + 1)
    area2 = (box2[:, 2] - box2[:, 0] + 1) * (box2[:, 3] - box2[:, 1] + 1)
    lt = torch.max(box1[:, None, :2], box2[:, :2])
    rb = torch.min(box1[:, None, 2:], box2[:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def box_coder_encode(gt_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """GLIP's ``BoxCoder.encode`` (``maskrcnn_benchmark/modeling/rpn/vldyhead.py``, the ATSS head's coder)."""
    ex_widths = anchors[:, 2] - anchors[:, 0] + 1
    ex_heights = anchors[:, 3] - anchors[:, 1] + 1
    ex_ctr_x = (anchors[:, 2] + anchors[:, 0]) / 2
    ex_ctr_y = (anchors[:, 3] + anchors[:, 1]) / 2
    gt_widths = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
    gt_heights = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
    gt_ctr_x = (gt_boxes[:, 2] + gt_boxes[:, 0]) / 2
    gt_ctr_y = (gt_boxes[:, 3] + gt_boxes[:, 1]) / 2
    return torch.stack((10.0 * (gt_ctr_x - ex_ctr_x) / ex_widths, 10.0 * (gt_ctr_y - ex_ctr_y) / ex_heights,
                        5.0 * torch.log(gt_widths / ex_widths), 5.0 * torch.log(gt_heights / ex_heights)), dim=1)


class GLIPPrepareTargetsStandIn:
    """The ATSS branch of GLIP's ``ATSSLossComputation.prepare_targets`` (``topk = cfg.MODEL.ATSS.TOPK``,
    ``anchors_per_location = len(cfg.MODEL.RPN.ASPECT_RATIOS) * cfg.MODEL.RPN.SCALES_PER_OCTAVE``)."""

    def __init__(self, topk: int, anchors_per_location: int) -> None:
        self.topk, self.anchors_per_location = topk, anchors_per_location

    def prepare_targets(self, targets: list[BoxList], anchors: list[list[BoxList]],
                        positive_map: torch.Tensor | None = None) -> tuple[list, list, list]:
        cls_labels, reg_targets, token_labels = [], [], []
        offset = 0
        for im_i, targets_per_im in enumerate(targets):
            assert targets_per_im.mode == "xyxy"
            bboxes_per_im = targets_per_im.bbox
            labels_per_im = targets_per_im.get_field("labels")
            num_gt = len(bboxes_per_im)
            if positive_map is not None:
                token_per_im = positive_map[offset:offset + num_gt, :]
                offset += num_gt
            anchors_per_im = cat_boxlist(anchors[im_i])
            num_anchors_per_level = [len(anchors_per_level.bbox) for anchors_per_level in anchors[im_i]]
            ious = boxlist_iou(anchors_per_im, targets_per_im)
            gt_points = torch.stack(((bboxes_per_im[:, 2] + bboxes_per_im[:, 0]) / 2.0,
                                     (bboxes_per_im[:, 3] + bboxes_per_im[:, 1]) / 2.0), dim=1)
            anchors_cx_per_im = (anchors_per_im.bbox[:, 2] + anchors_per_im.bbox[:, 0]) / 2.0
            anchors_cy_per_im = (anchors_per_im.bbox[:, 3] + anchors_per_im.bbox[:, 1]) / 2.0
            anchor_points = torch.stack((anchors_cx_per_im, anchors_cy_per_im), dim=1)
            distances = (anchor_points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
            candidate_idxs = []
            star_idx = 0
            for level in range(len(anchors[im_i])):
                end_idx = star_idx + num_anchors_per_level[level]
                topk = min(self.topk * self.anchors_per_location, num_anchors_per_level[level])
                _, topk_idxs_per_level = distances[star_idx:end_idx, :].topk(topk, dim=0, largest=False)
                candidate_idxs.append(topk_idxs_per_level + star_idx)
                star_idx = end_idx
            candidate_idxs = torch.cat(candidate_idxs, dim=0)
            candidate_ious = ious[candidate_idxs, torch.arange(num_gt)]
            iou_thresh_per_gt = candidate_ious.mean(0) + candidate_ious.std(0)
            is_pos = candidate_ious >= iou_thresh_per_gt[None, :]
            anchor_num = anchors_cx_per_im.shape[0]
            for ng in range(num_gt):
                candidate_idxs[:, ng] += ng * anchor_num
            e_anchors_cx = anchors_cx_per_im.view(1, -1).expand(num_gt, anchor_num).contiguous().view(-1)
            e_anchors_cy = anchors_cy_per_im.view(1, -1).expand(num_gt, anchor_num).contiguous().view(-1)
            candidate_idxs = candidate_idxs.view(-1)
            left = e_anchors_cx[candidate_idxs].view(-1, num_gt) - bboxes_per_im[:, 0]
            top = e_anchors_cy[candidate_idxs].view(-1, num_gt) - bboxes_per_im[:, 1]
            right = bboxes_per_im[:, 2] - e_anchors_cx[candidate_idxs].view(-1, num_gt)
            bottom = bboxes_per_im[:, 3] - e_anchors_cy[candidate_idxs].view(-1, num_gt)
            is_pos = is_pos & (torch.stack([left, top, right, bottom], dim=1).min(dim=1)[0] > 0.01)
            ious_inf = torch.full_like(ious, -INF).t().contiguous().view(-1)
            index = candidate_idxs.view(-1)[is_pos.view(-1)]
            ious_inf[index] = ious.t().contiguous().view(-1)[index]
            ious_inf = ious_inf.view(num_gt, -1).t()
            anchors_to_gt_values, anchors_to_gt_indexs = ious_inf.max(dim=1)
            cls_labels_per_im = labels_per_im[anchors_to_gt_indexs]
            cls_labels_per_im[anchors_to_gt_values == -INF] = 0
            if positive_map is not None:
                token_labels_per_im = token_per_im[anchors_to_gt_indexs]
                unmatched_labels = torch.zeros(token_labels_per_im.shape[1])
                unmatched_labels[-1] = 1
                token_labels_per_im[anchors_to_gt_values == -INF] = unmatched_labels
                token_labels.append(token_labels_per_im)
            cls_labels.append(cls_labels_per_im)
            reg_targets.append(box_coder_encode(bboxes_per_im[anchors_to_gt_indexs], anchors_per_im.bbox))
        return cls_labels, reg_targets, token_labels


def glip_batch(seed: int, per_location: int, integer: bool) -> tuple[list[BoxList], list[list[BoxList]], torch.Tensor]:
    """3 images of 128 x 96 px with 1-9 boxes (real-valued, or integer corners: distance ties), the anchor
    lists per image and level, and a positive map ``(boxes, 7 tokens)``."""
    gen = torch.Generator().manual_seed(seed)
    anchors, sizes = pyramid(LEVELS, per_location)
    targets = []
    for count in torch.randint(1, 10, (3,), generator=gen).tolist():
        size = torch.rand(count, 2, generator=gen) * 80 + 4
        corner = torch.rand(count, 2, generator=gen) * (torch.tensor([128.0, 96.0]) - size)
        boxes = torch.cat([corner, corner + size], 1)
        labels = torch.randint(1, 80, (count,), generator=gen)
        targets.append(BoxList(boxes.round() if integer else boxes, labels=labels))
    levels = [[BoxList(level) for level in torch.split(anchors, sizes)] for _ in targets]
    positive_map = (torch.rand(sum(len(t) for t in targets), 7, generator=gen) > 0.6).float()
    return targets, levels, positive_map


BACKENDS = ["torch", pytest.param("cpp", marks=pytest.mark.skipif(not cpp_available(),
                                                                  reason="fiber_kernels._C has no ATSS CPU kernel"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("per_location", [1, 9])
@pytest.mark.parametrize("seed", range(3))
def test_drop_in_equals_glip_prepare_targets(seed: int, per_location: int, backend: str) -> None:
    """Real-valued boxes (no distance ties): labels, token labels and regression targets equal GLIP's."""
    targets, anchors, positive_map = glip_batch(seed, per_location, integer=False)
    want_cls, want_reg, want_tokens = GLIPPrepareTargetsStandIn(9, per_location).prepare_targets(
        targets, anchors, positive_map)
    got = GLIPATSSTargets(9, per_location, backend=backend).prepare_targets(targets, anchors,
                                                                            positive_map=positive_map)
    cls_labels, reg_targets, token_labels, *rest = got
    assert rest == [[], [], [], []]
    assert sum(int((labels > 0).sum()) for labels in want_cls) > 10
    for b in range(len(targets)):
        assert torch.equal(cls_labels[b], want_cls[b])
        assert torch.equal(token_labels[b], want_tokens[b])
        assert torch.equal(reg_targets[b], want_reg[b])  # the same fp32 operations in the same order


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_boxes_differ_only_through_distance_ties(backend: str) -> None:
    """Integer corners put box centres on half pixels, equidistant from several anchor centres: torch.topk
    keeps an unspecified one of those tied at a level's k-th place, the drop-in the lower index. Images
    whose per-level candidate sets agree must agree in every label."""
    compared = 0
    for seed in range(20):
        targets, anchors, positive_map = glip_batch(100 + seed, 1, integer=True)
        want_cls, _, _ = GLIPPrepareTargetsStandIn(9, 1).prepare_targets(targets, anchors, positive_map)
        cls_labels = GLIPATSSTargets(9, 1, backend=backend).prepare_targets(targets, anchors)[0]
        for b, target in enumerate(targets):
            if not tied_at_kth(target.bbox, anchors[b]):
                assert torch.equal(cls_labels[b], want_cls[b])
                compared += 1
    assert compared >= 4


def tied_at_kth(boxes: torch.Tensor, levels: list[BoxList], k: int = 9) -> bool:
    """Whether some box has anchors tied with its k-th nearest at some level (torch.topk's choice is free)."""
    for level in levels:
        centres = torch.stack(((level.bbox[:, 2] + level.bbox[:, 0]) / 2.0,
                               (level.bbox[:, 3] + level.bbox[:, 1]) / 2.0), dim=1)
        points = torch.stack(((boxes[:, 2] + boxes[:, 0]) / 2.0, (boxes[:, 3] + boxes[:, 1]) / 2.0), dim=1)
        distances = (centres[:, None] - points[None]).pow(2).sum(-1).sqrt()
        if distances.shape[0] > k:
            kth = distances.topk(k, dim=0, largest=False).values[-1]
            if bool(((distances == kth).sum(0) > 1).any()):
                return True
    return False
