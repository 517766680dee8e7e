"""``fiber_kernels::atss_assign``: the Triton launcher as a torch.library custom op, and the shapes of the
assignment ops for fake and meta tensors (this op's and the C++ op ``fiber_kernels_C::atss_assign_fwd``'s,
whose schema adds ``fp32_statistics``), so FakeTensorMode, meta tensors and ``torch.compile(fullgraph=True)``
trace both.
"""

from __future__ import annotations

import torch

from .triton_atss import atss_assign_triton


def assign_output_shapes(anchors: torch.Tensor, level_starts: torch.Tensor, gt_boxes: torch.Tensor,
                         gt_mask: torch.Tensor, topk_total: int, glip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty outputs of an assignment op: matched ``(B, A)`` int64 and matched_iou ``(B, A)`` fp32, on the
    device of gt_boxes (anchors ``(1 or B, A, 4)``, gt_boxes ``(B, G, 4)``)."""
    shape = (gt_boxes.shape[0], anchors.shape[1])
    return gt_boxes.new_empty(shape, dtype=torch.int64), gt_boxes.new_empty(shape, dtype=torch.float32)


def compiled_output_shapes(anchors: torch.Tensor, level_starts: torch.Tensor, gt_boxes: torch.Tensor,
                           gt_mask: torch.Tensor, topk_total: int, glip: bool,
                           fp32_statistics: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``assign_output_shapes`` for the C++ op, whose schema adds ``fp32_statistics``."""
    return assign_output_shapes(anchors, level_starts, gt_boxes, gt_mask, topk_total, glip)


@torch.library.custom_op("fiber_kernels::atss_assign", mutates_args=())
def atss_assign_op(anchors: torch.Tensor, level_starts: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                   topk_total: int, glip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ATSS assignment by the Triton kernels: anchors ``(1 or B, A, 4)`` f32, level_starts ``(L + 1,)`` i64,
    gt_boxes ``(B, G, 4)`` f32, gt_mask ``(B, G)`` bool (any strides: made contiguous here) →
    ``(matched (B, A) i64, matched_iou (B, A) f32)``."""
    return atss_assign_triton(anchors.contiguous(), level_starts.contiguous(), gt_boxes.contiguous(),
                              gt_mask.contiguous(), topk_total, glip)


atss_assign_op.register_fake(assign_output_shapes)
