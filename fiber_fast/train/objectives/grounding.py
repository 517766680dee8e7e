"""Fine-stage losses on the ATSS head (GLIP/FIBER ``ATSSLossComputation`` with token-level alignment).

Targets: ``fiber_kernels.atss_assign`` (GLIP convention: +1 widths, top-9 per level, IoU >= mean +
std, centre inside the box) and ``fiber_kernels.atss_targets`` (box coder weights 10, 10, 5, 5;
centerness of the decoded target). A positive anchor's token targets are its box's row of the
positive map. Losses (GLIP's normalisation):
- word-region alignment: token-level sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``,
  alpha 0.25, gamma 2) summed over every anchor and every real (non-padding) text position,
  divided by the positive count averaged across ranks (at least 1);
- box: GIoU loss of the decoded boxes (``torchvision.ops.generalized_box_iou_loss``) weighted by the
  centerness targets, divided by the centerness-target sum averaged across ranks, times 2 (GLIP's
  ``REG_LOSS_WEIGHT``);
- centerness: BCE with logits summed over positives, divided by the averaged positive count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fiber_kernels import atss_assign, atss_targets
from fiber_kernels.atss.targets import decode_glip
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..distributed import mean_across_ranks


@dataclass(frozen=True)
class GroundingTargets:
    """Per-anchor targets of a batch: matched ``(B, A)`` int64 (-1 background), regression ``(B, A, 4)``,
    centerness ``(B, A)`` fp32, tokens ``(B, A, T)`` fp32 0/1."""

    matched: torch.Tensor
    regression: torch.Tensor
    centerness: torch.Tensor
    tokens: torch.Tensor


@torch.no_grad()
def grounding_targets(anchors: torch.Tensor, num_anchors_per_level: list[int], boxes: torch.Tensor,
                      box_mask: torch.Tensor, positive_map: torch.Tensor, *, topk: int = 9) -> GroundingTargets:
    """ATSS targets (GLIP convention) for anchors ``(A, 4)``, boxes ``(B, G, 4)`` fp32 xyxy, box_mask
    ``(B, G)`` bool and positive_map ``(B, G, T)`` float 0/1."""
    if positive_map.dim() != 3 or positive_map.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"positive_map must be (B, G, T) with (B, G) = {tuple(boxes.shape[:2])}, "
                         f"got {tuple(positive_map.shape)}")
    matched, _ = atss_assign(anchors.float(), num_anchors_per_level, boxes.float(), box_mask, topk=topk,
                             convention="glip")
    regression, centerness = atss_targets(anchors.float(), matched, boxes.float(), convention="glip")
    batch = torch.arange(boxes.shape[0], device=boxes.device)[:, None]
    tokens = positive_map.float()[batch, matched.clamp_min(0)] * (matched >= 0)[..., None]
    return GroundingTargets(matched, regression, centerness, tokens)


def _decoded_boxes(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """GLIP's decode with ``x2 >= x1, y2 >= y1`` enforced as in its ``GIoULoss``; ``(N, 4)``."""
    boxes = decode_glip(codes.float(), anchors.float())
    return torch.cat([boxes[:, :2], torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1)


def grounding_losses(cls_logits: torch.Tensor, box_regression: torch.Tensor, centerness: torch.Tensor,
                     anchors: torch.Tensor, targets: GroundingTargets, text_mask: torch.Tensor, *,
                     focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                     giou_weight: float = 2.0) -> dict[str, torch.Tensor]:
    """The three ATSS losses of one rank's batch, normalised across ranks (see the module doc).

    Args:
        cls_logits: ``(B, A, T)`` word-region logits; box_regression ``(B, A, 4)``; centerness ``(B, A)``.
        anchors: ``(A, 4)`` fp32 xyxy; targets: from :func:`grounding_targets`.
        text_mask: ``(B, T)`` 0/1, the text attention mask (padding positions are excluded).

    Returns ``{"cls": ..., "giou": ..., "centerness": ...}`` fp32 0-dim tensors (``giou`` already x weight).
    """
    if cls_logits.shape != targets.tokens.shape:
        raise ValueError(f"cls_logits must be (B, A, T) = {tuple(targets.tokens.shape)}, got {tuple(cls_logits.shape)}")
    if text_mask.shape != (cls_logits.shape[0], cls_logits.shape[2]):
        raise ValueError(f"text_mask must be (B, T) = {(cls_logits.shape[0], cls_logits.shape[2])}, "
                         f"got {tuple(text_mask.shape)}")
    positive = targets.matched >= 0
    num_pos = mean_across_ranks(positive.sum().float()).clamp_min(1.0)
    real_text = text_mask.bool()[:, None, :].expand_as(cls_logits)
    cls = sigmoid_focal_loss(cls_logits.float()[real_text], targets.tokens[real_text], alpha=focal_alpha,
                             gamma=focal_gamma, reduction="sum") / num_pos

    anchors_per_image = anchors.float().expand(positive.shape[0], -1, -1)[positive]
    center_targets = targets.centerness[positive]
    pred_boxes = _decoded_boxes(box_regression[positive], anchors_per_image)
    target_boxes = _decoded_boxes(targets.regression[positive], anchors_per_image)
    center_sum = mean_across_ranks(center_targets.sum()).clamp_min(1e-6)
    giou = (generalized_box_iou_loss(pred_boxes, target_boxes, reduction="none") * center_targets).sum() / center_sum
    center = F.binary_cross_entropy_with_logits(centerness.float()[positive], center_targets,
                                                reduction="sum") / num_pos
    return {"cls": cls, "giou": giou * giou_weight, "centerness": center}
