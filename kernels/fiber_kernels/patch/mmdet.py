"""mmdetection 3.x: importing this module registers ``FusedATSSAssigner`` in mmdet's ``TASK_UTILS``.

A config then swaps it in for ``ATSSAssigner`` with the same arguments::

    import fiber_kernels.patch.mmdet  # or custom_imports=dict(imports=["fiber_kernels.patch.mmdet"])
    train_cfg = dict(assigner=dict(type="FusedATSSAssigner", topk=9))

``iou_calculator`` is honoured for the configs mmdet ships: ``BboxOverlaps2D`` (mmdet's IoU, no
+1, union >= 1e-6; ``scale`` is accepted and, as in mmdet, has no effect without ``dtype='fp16'``)
and ``BboxOverlaps2D_GLIP`` (GLIP's +1 IoU, the ``"glip"`` convention of ``atss_assign``; mmdet's
GLIP calculator ignores ``dtype``/``scale``, and so does this). ``BboxOverlaps2D`` with
``dtype='fp16'`` (IoU in half precision, which moves thresholds) and any other calculator raise
``ValueError``. ``ignore_iof_thr > 0`` with ignore boxes is honoured: priors whose overlap with
an ignore box exceeds it are left out of the candidate search and get ``gt_inds = -1``. The threshold
statistics are mmdet's fp32 arithmetic (``statistics="fp32"``, conventions ``mmdet_fp32`` / ``glip_fp32``:
backends ``cpp`` and ``torch``) unless ``statistics="float64"`` asks for ours (every backend, the GPU
kernels included).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmdet.registry import TASK_UTILS

from ..atss import atss_assign
from ..atss.adapters import MMDET_INF
from ..atss.adapters import AssignResult as _PlainAssignResult
from ..atss.reference import CONVENTIONS, MMDET_EPS

CONVENTION_OF = {"BboxOverlaps2D": "mmdet", "BboxOverlaps2D_GLIP": "glip"}


def _assign_result_type() -> type:
    """mmdet's ``AssignResult``; the plain dataclass where ``mmdet.models`` cannot be imported (mmcv
    without its compiled ops, e.g. mmcv-lite: mmdet.models imports ``mmcv.ops`` throughout)."""
    try:
        from mmdet.models.task_modules.assigners.assign_result import AssignResult
    except ImportError:
        return _PlainAssignResult
    return AssignResult


STATISTICS = ("fp32", "float64")


def convention_of(iou_calculator: Mapping[str, Any] | None, statistics: str = "fp32") -> str:
    """The ``atss_assign`` convention that reproduces an mmdet ``iou_calculator`` config, with mmdet's fp32
    threshold statistics (``statistics="fp32"``) or ours (``"float64"``)."""
    if statistics not in STATISTICS:
        raise ValueError(f"statistics must be one of {STATISTICS}, got {statistics!r}")
    config = dict(iou_calculator or {"type": "BboxOverlaps2D"})
    kind = config.get("type")
    if kind not in CONVENTION_OF:
        raise ValueError(f"iou_calculator type must be one of {sorted(CONVENTION_OF)} (mmdet's IoU or GLIP's +1 "
                         f"IoU), got {kind!r}")
    if kind == "BboxOverlaps2D" and config.get("dtype") not in (None, "fp32"):
        raise ValueError(f"iou_calculator BboxOverlaps2D with dtype={config['dtype']!r} computes IoU in half "
                         "precision, which moves the ATSS thresholds; the fused assigner computes fp32 IoU: "
                         "drop dtype (scale then has no effect, as in mmdet)")
    return CONVENTION_OF[kind] + ("_fp32" if statistics == "fp32" else "")


def ignore_overlaps(priors: torch.Tensor, ignore_boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """``(A, I)`` overlaps of priors with ignore boxes as mmdet's assigner gets them from its calculator:
    ``"mmdet"``: IoF (intersection / prior area, area >= 1e-6); ``"glip"``: mmdet's GLIP calculator
    ignores ``mode='iof'`` and returns its +1 IoU."""
    glip = CONVENTIONS[convention].boxes == "glip"
    one = 1.0 if glip else 0.0
    lt = torch.max(priors[:, None, :2], ignore_boxes[None, :, :2])
    rb = torch.min(priors[:, None, 2:], ignore_boxes[None, :, 2:])
    wh = (rb - lt + one).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_p = (priors[:, 2] - priors[:, 0] + one) * (priors[:, 3] - priors[:, 1] + one)
    if glip:
        area_i = (ignore_boxes[:, 2] - ignore_boxes[:, 0] + one) * (ignore_boxes[:, 3] - ignore_boxes[:, 1] + one)
        return inter / (area_p[:, None] + area_i[None, :] - inter)
    return inter / area_p.clamp(min=MMDET_EPS)[:, None]


class FusedATSSAssigner:
    """mmdet's ``ATSSAssigner`` (same constructor and ``assign``) on the fused ``atss_assign``.

    Args:
        topk: candidates per level per box.
        alpha: DDOD's cost-based ATSS; must be None (``ValueError`` otherwise).
        iou_calculator: ``dict(type='BboxOverlaps2D')`` (default) or ``dict(type='BboxOverlaps2D_GLIP')``.
        ignore_iof_thr: > 0 to ignore priors overlapping ``gt_instances_ignore`` boxes by more.
        backend: ``atss_assign``'s backend.
        statistics: ``"fp32"`` (mmdet's ``mean(0) + std(0)`` of fp32 IoUs, as torch computes them on the
            CPU; backends ``cpp`` and ``torch``) or ``"float64"`` (ours; every backend).

    Known differences from mmdet (tests/drop_in/test_mmdet.py measures them): among candidates tied
    on centre distance at a level's k-th place, ``torch.topk`` keeps an unspecified one, this keeps
    the lower index; on a GPU, mmdet's fp32 mean is CUDA's order of additions, which only the
    ``torch`` backend (mmdet's very calls) reproduces; with ignore boxes, a level left with
    fewer than ``min(topk, priors in level)`` priors makes mmdet take ignored priors (distance
    1e8) as candidates too, which this does not (a ``RuntimeWarning`` says so).
    """

    def __init__(self, topk: int, alpha: float | None = None, iou_calculator: Mapping[str, Any] | None = None,
                 ignore_iof_thr: float = -1, backend: str = "auto", statistics: str = "fp32") -> None:
        if alpha is not None:
            raise ValueError(f"alpha must be None: DDOD's cost-based ATSS (alpha={alpha}) is not fused")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be an int >= 1, got {topk!r}")
        self.topk = topk
        self.convention = convention_of(iou_calculator, statistics)
        self.ignore_iof_thr = float(ignore_iof_thr)
        self.backend = backend

    def _ignored(self, priors: torch.Tensor, gt_instances_ignore: Any | None) -> torch.Tensor | None:
        if gt_instances_ignore is None or self.ignore_iof_thr <= 0:
            return None
        boxes = gt_instances_ignore.bboxes.float().reshape(-1, 4)
        if boxes.numel() == 0:
            return None
        return ignore_overlaps(priors, boxes, self.convention).max(dim=1).values > self.ignore_iof_thr

    def _level_sizes(self, keep: torch.Tensor, num_level_priors: Sequence[int]) -> list[int]:
        sizes = [int(part.sum()) for part in torch.split(keep, list(num_level_priors))]
        for level, (kept, size) in enumerate(zip(sizes, num_level_priors, strict=True)):
            if kept < min(self.topk, size):
                warnings.warn(f"FusedATSSAssigner: level {level} keeps {kept} of {size} priors after ignoring, fewer "
                              f"than topk={self.topk}; mmdet's ATSSAssigner would take ignored priors as candidates "
                              "there too, the fused assigner takes only the kept ones", RuntimeWarning, stacklevel=3)
        return sizes

    def assign(self, pred_instances: Any, num_level_priors: Sequence[int], gt_instances: Any,
               gt_instances_ignore: Any | None = None) -> Any:
        """priors ``(A, 4+)`` (``pred_instances.priors``), ``gt_instances.bboxes (G, 4)`` / ``.labels (G,)``
        -> mmdet's ``AssignResult``: ``gt_inds (A,)`` (0 background, -1 ignored, else 1-based box),
        ``max_overlaps (A,)`` (IoU of positives, -1e8 otherwise; zeros without boxes), ``labels (A,)``."""
        result_type = _assign_result_type()
        priors = pred_instances.priors[:, :4].float()
        gt_bboxes = gt_instances.bboxes.float().reshape(-1, 4)
        num_gt, num_priors = gt_bboxes.shape[0], priors.shape[0]
        device = priors.device
        gt_inds = torch.zeros(num_priors, dtype=torch.long, device=device)
        labels = torch.full((num_priors,), -1, dtype=torch.long, device=device)
        if num_gt == 0 or num_priors == 0:
            return result_type(num_gt, gt_inds, priors.new_zeros((num_priors,)), labels=labels)
        ignored = self._ignored(priors, gt_instances_ignore)
        keep = torch.ones(num_priors, dtype=torch.bool, device=device) if ignored is None else ~ignored
        sizes = self._level_sizes(keep, num_level_priors) if ignored is not None else list(num_level_priors)
        kept_index = keep.nonzero()[:, 0]
        matched, iou = atss_assign(priors[kept_index], sizes, gt_bboxes[None], topk=self.topk,
                                   convention=self.convention, backend=self.backend)
        matched, iou = matched[0], iou[0]
        positive = matched >= 0
        if ignored is not None:
            gt_inds[ignored] = -1
        gt_inds[kept_index] = torch.where(positive, matched + 1, gt_inds[kept_index])
        max_overlaps = priors.new_full((num_priors,), -MMDET_INF)
        max_overlaps[kept_index[positive]] = iou[positive]
        pos_index = kept_index[positive]
        labels[pos_index] = gt_instances.labels[matched[positive]].long()
        return result_type(num_gt, gt_inds, max_overlaps, labels=labels)


TASK_UTILS.register_module(name="FusedATSSAssigner", module=FusedATSSAssigner, force=True)
