"""Every bad input of atss_assign / atss_targets raises a clear error naming the argument."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels import BackendNotSupportedError
from fiber_kernels.atss import atss_assign, atss_targets
from fiber_kernels.atss.api import cpp_available

from ._cases import SMALL, pyramid

ANCHORS, SIZES = pyramid(SMALL)
BOXES = torch.tensor([[[10.0, 10.0, 40.0, 30.0], [50.0, 5.0, 90.0, 60.0]]])


def _with(tensor: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    out = tensor.clone()
    out[index] = value
    return out


BAD_ASSIGN = [
    ("nan_box", dict(gt_boxes=_with(BOXES, (0, 1, 2), float("nan"))), ValueError,
     "gt_boxes must hold finite coordinates"),
    ("inf_anchor", dict(anchors=_with(ANCHORS, (3, 0), float("inf"))), ValueError,
     "anchors must hold finite coordinates"),
    ("inverted_box", dict(gt_boxes=_with(BOXES, (0, 0, 2), 5.0)), ValueError,
     r"gt_boxes must be xyxy with x2 >= x1 and y2 >= y1, got 1 inverted box\(es\), first \[10.0, 10.0, 5.0, 30.0\]"),
    ("inverted_anchor", dict(anchors=_with(ANCHORS, (0, 3), -100.0)), ValueError, "anchors must be xyxy with x2 >= x1"),
    ("levels_do_not_sum", dict(num_anchors_per_level=[96, 24, 5]), ValueError,
     r"num_anchors_per_level must sum to the number of anchors A = 126, got \[96, 24, 5\] \(sum 125\)"),
    ("negative_level", dict(num_anchors_per_level=[127, -1]), ValueError, "num_anchors_per_level must hold sizes >= 0"),
    ("float_level", dict(num_anchors_per_level=[96.0, 24, 6]), TypeError, "num_anchors_per_level must hold ints"),
    ("no_levels", dict(num_anchors_per_level=[]), ValueError, "must name at least one level"),
    ("level_tensor_float", dict(num_anchors_per_level=torch.tensor([96.0, 24.0, 6.0])), TypeError,
     "num_anchors_per_level must be a sequence of ints or a 1-D integer tensor"),
    ("anchors_5_coords", dict(anchors=torch.zeros(126, 5)), ValueError,
     r"anchors must be \(A, 4\) or \(B, A, 4\) xyxy"),
    ("anchors_1d", dict(anchors=torch.zeros(126)), ValueError, r"anchors must be 2-D or 3-D \(A, 4\) or \(B, A, 4\)"),
    ("boxes_2d", dict(gt_boxes=BOXES[0]), ValueError, r"gt_boxes must be 3-D \(B, G, 4\)"),
    ("boxes_3_coords", dict(gt_boxes=BOXES[..., :3]), ValueError, r"gt_boxes must be \(B, G, 4\) xyxy"),
    ("anchor_batch", dict(anchors=ANCHORS.expand(3, -1, -1)), ValueError, "must have the same batch B, got 3 and 1"),
    ("mask_shape", dict(gt_mask=torch.ones(1, 3, dtype=torch.bool)), ValueError,
     r"gt_mask must have shape \(B, G\) = \(1, 2\)"),
    ("anchors_fp64", dict(anchors=ANCHORS.double()), TypeError,
     r"anchors must have dtype in \(float32\), got torch.float64"),
    ("boxes_fp16", dict(gt_boxes=BOXES.half()), TypeError, r"gt_boxes must have dtype in \(float32\)"),
    ("mask_int", dict(gt_mask=torch.ones(1, 2, dtype=torch.int64)), TypeError, r"gt_mask must have dtype in \(bool\)"),
    ("boxes_list", dict(gt_boxes=BOXES.tolist()), TypeError, "gt_boxes must be a torch.Tensor"),
    ("topk_zero", dict(topk=0), ValueError, "topk must be an int >= 1, got 0"),
    ("apl_float", dict(anchors_per_location=1.0), TypeError, "anchors_per_location must be an int >= 1"),
    ("convention", dict(convention="detectron"), ValueError,
     r"convention must be one of \('glip', 'mmdet', 'glip_fp32', 'mmdet_fp32'\)"),
    ("backend", dict(backend="numpy"), ValueError, "backend must be one of"),
    ("triton_topk", dict(topk=15, anchors_per_location=9, backend="triton"), BackendNotSupportedError,
     "topk \\* anchors_per_location must be <= 128, got 135"),
    ("cuda_on_cpu", dict(backend="cuda"), BackendNotSupportedError,
     "cuda: tensors are on cpu, this backend needs cuda"),
]


# every backend that runs here; a case that names its own backend runs once
BACKENDS = ["torch", "triton"] + (["cpp"] if cpp_available() else [])
BAD_ASSIGN_PARAMS = [pytest.param(*case, backend, id=f"{case[0]}-{backend}")
                     for case in BAD_ASSIGN for backend in (["named"] if "backend" in case[1] else BACKENDS)]


@pytest.mark.parametrize("name,change,error,message,backend", BAD_ASSIGN_PARAMS)
def test_bad_input_raises(name: str, change: dict, error: type, message: str, backend: str) -> None:
    args = dict(anchors=ANCHORS, num_anchors_per_level=SIZES, gt_boxes=BOXES, gt_mask=None)
    if backend != "named":
        args["backend"] = backend
    args.update(change)
    kwargs = {key: args.pop(key) for key in ("topk", "anchors_per_location", "convention", "backend") if key in args}
    with pytest.raises(error, match=message):
        atss_assign(args["anchors"], args["num_anchors_per_level"], args["gt_boxes"], args["gt_mask"], **kwargs)


BAD_OP = [
    ("anchors_2d", dict(anchors=ANCHORS), "anchors must be float32 \\(1 or B, A, 4\\)"),
    ("anchors_fp64", dict(anchors=ANCHORS[None].double()), "anchors must be float32"),
    ("boxes_5_coords", dict(gt_boxes=torch.zeros(1, 2, 5)), "gt_boxes must be float32 \\(B, G, 4\\)"),
    ("mask_uint8", dict(gt_mask=torch.ones(1, 2, dtype=torch.uint8)), "gt_mask must be bool \\(B, G\\)"),
    ("mask_shape", dict(gt_mask=torch.ones(1, 3, dtype=torch.bool)), "gt_mask must be bool \\(B, G\\)"),
    ("starts_int32", dict(level_starts=torch.tensor([0, 96, 120, 126], dtype=torch.int32)),
     "level_starts must be int64 \\(L \\+ 1,\\)"),
    ("topk_zero", dict(topk_total=0), "topk_total must be >= 1"),
    ("anchor_batch", dict(anchors=ANCHORS[None].expand(3, -1, -1).contiguous()), "anchors batch must be 1 or B"),
]


def op_arguments(change: dict) -> tuple:
    """Arguments of ``fiber_kernels_C::atss_assign_fwd`` (and its emulation binding) with ``change`` applied."""
    args = dict(anchors=ANCHORS[None], level_starts=torch.tensor([0] + SIZES).cumsum(0), gt_boxes=BOXES,
                gt_mask=torch.ones(1, 2, dtype=torch.bool), topk_total=9, glip=True)
    args.update(change)
    return tuple(args.values())


@pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel")
@pytest.mark.parametrize("name,change,message", BAD_OP, ids=[case[0] for case in BAD_OP])
def test_compiled_op_checks_its_inputs(name: str, change: dict, message: str) -> None:
    """The C++ op's own checks (atss_launch.h, shared by the CPU kernel, the CUDA launcher and its emulation)."""
    with pytest.raises(RuntimeError, match=f"atss_assign_fwd: {message}"):
        torch.ops.fiber_kernels_C.atss_assign_fwd(*op_arguments(change))


def test_padding_is_not_validated() -> None:
    boxes = torch.cat([BOXES, torch.tensor([[[float("nan"), 0.0, -5.0, 0.0]]])], dim=1)
    mask = torch.tensor([[True, True, False]])
    matched, _ = atss_assign(ANCHORS, SIZES, boxes, mask, backend="torch")
    want, _ = atss_assign(ANCHORS, SIZES, BOXES, backend="torch")
    assert torch.equal(matched, want)


BAD_TARGETS = [
    (dict(matched_gt=torch.zeros(1, 126, dtype=torch.int32)), TypeError, r"matched_gt must have dtype in \(int64\)"),
    (dict(matched_gt=torch.full((1, 126), 2)), ValueError, r"matched_gt must hold -1 or box indices in \[0, G = 2\)"),
    (dict(matched_gt=torch.full((1, 126), -2)), ValueError, "got values in \\[-2, -2\\]"),
    (dict(anchors=ANCHORS[:10]), ValueError, r"anchors must be \(A, 4\) or \(B, A, 4\) with \(B, A\) = \(1, 126\)"),
    (dict(gt_boxes=BOXES.expand(2, -1, -1)), ValueError, r"gt_boxes must be \(B, G, 4\) with B = 1"),
    (dict(convention="x"), ValueError, "convention must be one of"),
]


@pytest.mark.parametrize("change,error,message", BAD_TARGETS)
def test_bad_targets_input_raises(change: dict, error: type, message: str) -> None:
    args = dict(anchors=ANCHORS, matched_gt=torch.full((1, 126), -1), gt_boxes=BOXES)
    args.update(change)
    convention = args.pop("convention", "glip")
    with pytest.raises(error, match=message):
        atss_targets(args["anchors"], args["matched_gt"], args["gt_boxes"], convention=convention)
