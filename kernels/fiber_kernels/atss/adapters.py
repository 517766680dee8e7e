"""Drop-ins for the two codebases whose ATSS step ``atss_assign`` replaces.

* ``FusedATSSAssigner``: mmdetection's assigner call shape, ``assign(pred_instances, num_level_priors,
  gt_instances, gt_instances_ignore=None)``, returning 1-based box indices (0 background), the max
  overlaps (-1e8 for background when there are boxes, as mmdetection) and labels (-1 background).
  Duck-typed on objects with ``.priors`` / ``.bboxes`` / ``.labels``; returns mmdetection's
  ``AssignResult`` when mmdetection is importable. Importing ``fiber_kernels.patch.mmdet`` registers the
  mmdetection assigner (with its IoU-calculator configs) in mmdetection's ``TASK_UTILS``; importing this
  module registers nothing (mmdetection's registry imports ``mmdet.models``, which fails without mmcv's
  compiled ops).
* ``GLIPATSSTargets.prepare_targets(targets, anchors, ...)``: GLIP/FIBER's
  ``ATSSLossComputation.prepare_targets`` with the same inputs (per-image box lists with ``.bbox`` and
  ``.get_field("labels")``; per image a list of per-level anchor box lists) and outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .api import atss_assign
from .targets import encode

MMDET_INF = 100000000


@dataclass
class AssignResult:
    """mmdetection's ``AssignResult`` fields, for use without mmdetection."""

    num_gts: int
    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    labels: torch.Tensor


def _mmdet_assign_result() -> Any:
    try:
        from mmdet.models.task_modules.assigners import AssignResult as MMDetAssignResult
    except ImportError:
        return AssignResult
    return MMDetAssignResult


class FusedATSSAssigner:
    """mmdetection ``ATSSAssigner`` (``topk``, IoU ``BboxOverlaps2D``) on the fused ``atss_assign`` kernels.

    ``alpha`` (DDOD's cost-based ATSS) and ``ignore_iof_thr > 0`` with ignore boxes are not supported
    and raise ``NotImplementedError``.
    """

    def __init__(self, topk: int, alpha: float | None = None, iou_calculator: dict | None = None,
                 ignore_iof_thr: float = -1, backend: str = "auto") -> None:
        if alpha is not None:
            raise NotImplementedError("FusedATSSAssigner: alpha (DDOD's cost-based ATSS) is not supported; "
                                      "use alpha=None")
        if iou_calculator is not None and dict(iou_calculator).get("type") not in ("BboxOverlaps2D", None):
            raise NotImplementedError(f"FusedATSSAssigner: only iou_calculator BboxOverlaps2D is supported, "
                                      f"got {iou_calculator!r}")
        self.topk = topk
        self.ignore_iof_thr = ignore_iof_thr
        self.backend = backend

    def assign(self, pred_instances: Any, num_level_priors: Sequence[int], gt_instances: Any,
               gt_instances_ignore: Any | None = None) -> Any:
        """priors ``(A, 4+)``, gt bboxes ``(G, 4)`` and labels ``(G,)``; returns an ``AssignResult``."""
        if (gt_instances_ignore is not None and self.ignore_iof_thr > 0
                and gt_instances_ignore.bboxes.numel() > 0 and pred_instances.priors.numel() > 0):
            raise NotImplementedError("FusedATSSAssigner: ignore boxes with ignore_iof_thr > 0 are not supported")
        priors = pred_instances.priors[:, :4].float()
        gt_bboxes = gt_instances.bboxes.float().reshape(-1, 4)
        gt_labels = gt_instances.labels
        num_gt, num_priors = gt_bboxes.shape[0], priors.shape[0]
        result_type = _mmdet_assign_result()
        if num_gt == 0 or num_priors == 0:
            return result_type(num_gt, torch.zeros(num_priors, dtype=torch.long, device=priors.device),
                               priors.new_zeros((num_priors,)),
                               labels=torch.full((num_priors,), -1, dtype=torch.long, device=priors.device))
        matched, iou = atss_assign(priors, list(num_level_priors), gt_bboxes[None], topk=self.topk,
                                   convention="mmdet", backend=self.backend)
        matched, iou = matched[0], iou[0]
        positive = matched >= 0
        labels = torch.full((num_priors,), -1, dtype=torch.long, device=priors.device)
        labels[positive] = gt_labels[matched[positive]].long()
        max_overlaps = torch.where(positive, iou, iou.new_full((), -MMDET_INF))
        return result_type(num_gt, matched + 1, max_overlaps, labels=labels)


class GLIPATSSTargets:
    """GLIP/FIBER ``ATSSLossComputation.prepare_targets`` on the fused kernels.

    ``topk`` is ``cfg.MODEL.ATSS.TOPK``; ``anchors_per_location`` is ``len(cfg.MODEL.RPN.ASPECT_RATIOS)
    * cfg.MODEL.RPN.SCALES_PER_OCTAVE``. Patch with ``loss_evaluator.prepare_targets =
    GLIPATSSTargets(topk, anchors_per_location).prepare_targets``. ``statistics``: ``"fp32"`` (GLIP's
    ``mean(0) + std(0)`` of fp32 IoUs, convention ``glip_fp32``: backends ``cpp`` and ``torch``) or
    ``"float64"`` (ours, convention ``glip``: every backend, the GPU kernels included).
    """

    def __init__(self, topk: int = 9, anchors_per_location: int = 1, backend: str = "auto",
                 statistics: str = "fp32") -> None:
        if statistics not in ("fp32", "float64"):
            raise ValueError(f"statistics must be 'fp32' or 'float64', got {statistics!r}")
        self.topk = topk
        self.anchors_per_location = anchors_per_location
        self.backend = backend
        self.convention = "glip_fp32" if statistics == "fp32" else "glip"

    def prepare_targets(self, targets: Sequence[Any], anchors: Sequence[Sequence[Any]], tokenized: Any = None,
                        positive_map: torch.Tensor | None = None, proj_tokens: torch.Tensor | None = None) -> tuple:
        """GLIP's outputs: ``(cls_labels, reg_targets, token_labels, map_labels, gold_box_od_labels,
        od_label_of_tokens_labels, positive_indices)``; per image ``cls_labels (A,)`` (0 background),
        ``reg_targets (A, 4)`` (background anchors encode box 0, as GLIP), ``token_labels (A, T)`` when
        ``positive_map`` is given (background: the last token). The last four need ``proj_tokens``
        (the shallow contrastive loss), which is not supported."""
        if proj_tokens is not None:
            raise NotImplementedError("GLIPATSSTargets: proj_tokens (shallow contrastive targets) is not supported")
        for target in targets:
            if getattr(target, "mode", "xyxy") != "xyxy":
                raise ValueError(f"targets must be xyxy box lists, got mode {target.mode!r}")
        level_sizes = [len(level.bbox) for level in anchors[0]]
        for image_levels in anchors:
            if [len(level.bbox) for level in image_levels] != level_sizes:
                raise ValueError("every image must have the same anchors per level, got "
                                 f"{[[len(level.bbox) for level in image] for image in anchors]}")
        image_anchors = torch.stack([torch.cat([level.bbox for level in image_levels]) for image_levels in anchors])
        counts = [len(target.bbox) for target in targets]
        gt_boxes = image_anchors.new_zeros((len(targets), max(counts, default=0), 4))
        gt_mask = torch.zeros(gt_boxes.shape[:2], dtype=torch.bool, device=gt_boxes.device)
        for b, target in enumerate(targets):
            gt_boxes[b, :counts[b]] = target.bbox
            gt_mask[b, :counts[b]] = True
        matched, _ = atss_assign(image_anchors.float(), level_sizes, gt_boxes.float(), gt_mask, topk=self.topk,
                                 anchors_per_location=self.anchors_per_location, convention=self.convention,
                                 backend=self.backend)
        cls_labels, reg_targets, token_labels = [], [], []
        offset = 0
        for b, target in enumerate(targets):
            index = matched[b].clamp(min=0)
            background = matched[b] < 0
            if counts[b] == 0:
                cls_labels.append(torch.zeros(index.shape[0], dtype=torch.long, device=index.device))
                reg_targets.append(image_anchors.new_zeros((index.shape[0], 4)))
            else:
                labels = target.get_field("labels")[index]
                labels[background] = 0
                cls_labels.append(labels)
                reg_targets.append(encode(target.bbox[index], image_anchors[b], "glip"))
            if positive_map is not None:
                tokens = positive_map[offset:offset + counts[b]]
                offset += counts[b]
                unmatched = torch.zeros(positive_map.shape[1], dtype=positive_map.dtype, device=positive_map.device)
                unmatched[-1] = 1
                per_anchor = tokens[index] if counts[b] else unmatched.expand(index.shape[0], -1).clone()
                per_anchor[background] = unmatched
                token_labels.append(per_anchor)
        return cls_labels, reg_targets, token_labels, [], [], [], []
