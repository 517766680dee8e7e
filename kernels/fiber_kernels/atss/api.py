"""Public entry points ``atss_assign`` and ``atss_targets``: validation, dispatch, docs.

Backends of op ``"atss_assign"`` (``fiber_kernels.dispatch``): ``triton`` (CUDA, or CPU tensors under
``TRITON_INTERPRET=1`` when asked for by name), ``cuda`` (the CUDA kernel of ``fiber_kernels._C``, for
sm70+, available when ``_C`` was built with CUDA), ``cpp`` (the C++ CPU kernel of ``_C``; levels whose
anchors form a regular grid take a window of locations per box instead of a scan, csrc/atss/atss_grid.h),
``torch`` (the per-image reference loop); their limits are data in ``limits.py``. One C++ op,
``fiber_kernels_C::atss_assign_fwd``, serves ``cuda`` and ``cpp`` by the device of its tensors; the Triton
launcher is the custom op ``fiber_kernels::atss_assign``.

Validation reads only metadata (shapes, dtypes, devices, the level sizes as ints), except the box
checks (finite, x2 >= x1, y2 >= y1) and ``atss_targets``' index range, which read values and run only
where ``fiber_kernels.reads_values`` allows (real tensors, outside ``torch.compile`` tracing and
``fiber_kernels.value_checks(False)``). So fake and meta tensors propagate shapes and
``torch.compile(fullgraph=True)`` traces the ``cpp``/``cuda``/``triton`` paths (pass the level sizes as
ints: a tensor is read with ``tolist()``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch._subclasses.fake_tensor import is_fake

from .. import _extension, dispatch
from .._validate import check_choice, check_positive_int, check_same_device, check_tensor, reads_values
from .function import assign_output_shapes, atss_assign_op, compiled_output_shapes
from .limits import LIMITS
from .reference import CONVENTIONS, atss_assign_reference
from .targets import targets_for

OP = "atss_assign"
SERIAL_BOXES = 4096  # boxes per value-check op: 16384 elements, below torch's parallel grain (32768)


def _level_sizes(num_anchors_per_level: object, num_anchors: int) -> list[int]:
    if isinstance(num_anchors_per_level, torch.Tensor):
        if num_anchors_per_level.dim() != 1 or num_anchors_per_level.is_floating_point():
            raise TypeError("num_anchors_per_level must be a sequence of ints or a 1-D integer tensor, got "
                            f"a {num_anchors_per_level.dim()}-D {num_anchors_per_level.dtype} tensor")
        num_anchors_per_level = num_anchors_per_level.tolist()
    if not isinstance(num_anchors_per_level, Sequence) or isinstance(num_anchors_per_level, str):
        raise TypeError(f"num_anchors_per_level must be a sequence of ints, got {type(num_anchors_per_level).__name__}")
    if len(num_anchors_per_level) == 0:
        raise ValueError("num_anchors_per_level must name at least one level, got an empty sequence")
    sizes = []
    for size in num_anchors_per_level:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"num_anchors_per_level must hold ints, got {type(size).__name__}")
        if size < 0:
            raise ValueError(f"num_anchors_per_level must hold sizes >= 0, got {list(num_anchors_per_level)}")
        sizes.append(size)
    if sum(sizes) != num_anchors:
        raise ValueError(f"num_anchors_per_level must sum to the number of anchors A = {num_anchors}, "
                         f"got {sizes} (sum {sum(sizes)})")
    return sizes


def _check_boxes(name: str, boxes: torch.Tensor, valid: torch.Tensor | None = None) -> None:
    """Finite coordinates and x2 >= x1, y2 >= y1 for every box (of ``valid`` ones when given).

    Checked in parts of ``SERIAL_BOXES`` boxes: torch runs an op on fewer than 32768 elements on the calling
    thread, so the check never wakes the intra-op pool (on a loaded 2-core machine one wake cost ~100 ms
    against ~0.3 ms for the whole check; bench/bench_atss.py times 1 and 2 threads). Boxes that are not
    ``valid`` read as zeros (finite, not inverted) instead of being dropped by boolean indexing, which woke
    the pool even for 1600 boxes (3-10 ms with 2 threads against 0.02 ms with 1 on that machine)."""
    flat = boxes.reshape(-1, 4)
    keep = None if valid is None else valid.reshape(-1, 1)
    for start in range(0, flat.shape[0], SERIAL_BOXES):
        part = flat[start:start + SERIAL_BOXES]
        if keep is not None:
            part = torch.where(keep[start:start + SERIAL_BOXES], part, 0.0)
        if not bool(torch.isfinite(part).all()):
            raise ValueError(f"{name} must hold finite coordinates, got NaN or inf")
        bad = (part[:, 2] < part[:, 0]) | (part[:, 3] < part[:, 1])
        if bool(bad.any()):
            raise ValueError(f"{name} must be xyxy with x2 >= x1 and y2 >= y1, got {int(bad.sum())} inverted "
                             f"box(es), first {part[bad][0].tolist()}")


def validate(anchors: object, num_anchors_per_level: object, gt_boxes: object, gt_mask: object, topk: object,
             anchors_per_location: object, convention: object) -> list[int]:
    """Check every argument of ``atss_assign``; return the level sizes as ints."""
    check_tensor("anchors", anchors, ndim=(2, 3), dtypes=(torch.float32,), shape_doc="(A, 4) or (B, A, 4)",
                 allow_empty=True)
    check_tensor("gt_boxes", gt_boxes, ndim=3, dtypes=(torch.float32,), shape_doc="(B, G, 4)", allow_empty=True)
    if gt_mask is not None:
        check_tensor("gt_mask", gt_mask, ndim=2, dtypes=(torch.bool,), shape_doc="(B, G)", allow_empty=True)
    check_same_device(anchors=anchors, gt_boxes=gt_boxes, gt_mask=gt_mask)
    check_positive_int("topk", topk)
    check_positive_int("anchors_per_location", anchors_per_location)
    check_choice("convention", convention, tuple(CONVENTIONS))
    if anchors.shape[-1] != 4:
        raise ValueError(f"anchors must be (A, 4) or (B, A, 4) xyxy, got shape {tuple(anchors.shape)}")
    if gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (B, G, 4) xyxy, got shape {tuple(gt_boxes.shape)}")
    if anchors.dim() == 3 and anchors.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f"anchors (B, A, 4) and gt_boxes (B, G, 4) must have the same batch B, "
                         f"got {anchors.shape[0]} and {gt_boxes.shape[0]}")
    if gt_mask is not None and tuple(gt_mask.shape) != tuple(gt_boxes.shape[:2]):
        raise ValueError(f"gt_mask must have shape (B, G) = {tuple(gt_boxes.shape[:2])}, got {tuple(gt_mask.shape)}")
    sizes = _level_sizes(num_anchors_per_level, anchors.shape[-2])
    if reads_values(anchors, gt_boxes, gt_mask):
        _check_boxes("anchors", anchors)
        _check_boxes("gt_boxes", gt_boxes, gt_mask)
    return sizes


def _level_starts(sizes: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([0] + sizes, dtype=torch.int64).cumsum(0).to(device)


def _reasons_of(name: str) -> dispatch.ReasonsFn:
    """Dispatch reasons of backend ``name``, read from its declared ``LIMITS``."""
    limits = LIMITS[name]

    def reasons(device: dispatch.DeviceInfo, anchors: torch.Tensor, sizes: list[int], topk_total: int,
                convention: str = "glip", **_: object) -> list[str]:
        return limits.reasons(anchors.shape[-2], len(sizes), topk_total, CONVENTIONS[convention].fp32_statistics)

    return reasons


def _batched_anchors(anchors: torch.Tensor) -> torch.Tensor:
    return (anchors[None] if anchors.dim() == 2 else anchors).contiguous()


def _run_triton(anchors, sizes, gt_boxes, gt_mask, topk_total, glip, **_):
    return atss_assign_op(_batched_anchors(anchors), _level_starts(sizes, anchors.device), gt_boxes, gt_mask,
                          topk_total, glip)


def _run_compiled(anchors, sizes, gt_boxes, gt_mask, topk_total, glip, convention, **_):
    starts = _level_starts(sizes, gt_boxes.device)
    return torch.ops.fiber_kernels_C.atss_assign_fwd(_batched_anchors(anchors), starts, gt_boxes.contiguous(),
                                                     gt_mask.contiguous(), topk_total, glip,
                                                     CONVENTIONS[convention].fp32_statistics)


def _run_torch(anchors, sizes, gt_boxes, gt_mask, topk, anchors_per_location, convention, **_):
    if gt_boxes.device.type == "meta" or (not torch.compiler.is_compiling() and is_fake(gt_boxes)):
        # no values to select by (the reference has data-dependent shapes): the shapes of the result
        return assign_output_shapes(_batched_anchors(anchors), None, gt_boxes, gt_mask, topk, False)
    return atss_assign_reference(anchors, sizes, gt_boxes, gt_mask, topk=topk,
                                 anchors_per_location=anchors_per_location, convention=convention)


if _extension.is_built() and hasattr(torch.ops.fiber_kernels_C, "atss_assign_fwd"):
    torch.library.register_fake("fiber_kernels_C::atss_assign_fwd", compiled_output_shapes)

dispatch.register_backend(OP, "triton", _run_triton, _reasons_of("triton"))
dispatch.register_backend(OP, "cuda", _run_compiled, _reasons_of("cuda"))
dispatch.register_backend(OP, "cpp", _run_compiled, _reasons_of("cpp"))
dispatch.register_backend(OP, "torch", _run_torch, _reasons_of("torch"))


def atss_assign(anchors: torch.Tensor, num_anchors_per_level: Sequence[int] | torch.Tensor, gt_boxes: torch.Tensor,
                gt_mask: torch.Tensor | None = None, *, topk: int = 9, anchors_per_location: int = 1,
                convention: str = "glip", backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ATSS assignment (GLIP/FIBER ``prepare_targets``, mmdetection ``ATSSAssigner``).

    Args:
        anchors: ``(A, 4)`` shared by the batch or ``(B, A, 4)``, fp32 xyxy, levels concatenated.
        num_anchors_per_level: anchors per FPN level, summing to A.
        gt_boxes: ``(B, G, 4)`` fp32 xyxy, padded to the largest box count.
        gt_mask: ``(B, G)`` bool, True for real boxes (None: all real).
        topk: anchors taken per level per box (ATSS ``TOPK``); per level ``k = min(topk *
            anchors_per_location, anchors in the level)``, as GLIP (mmdetection: anchors_per_location = 1).
        convention: ``"glip"`` (+1 box widths) or ``"mmdet"`` (no +1, union >= 1e-6), threshold statistics
            summed in float64 (every backend); ``"glip_fp32"`` / ``"mmdet_fp32"``: the same boxes with the
            threshold's mean as GLIP's / mmdetection's fp32 ``mean(0)`` (backends ``cpp`` and ``torch``).
        backend: ``"auto"``, ``"triton"``, ``"cuda"``, ``"cpp"`` or ``"torch"``.

    Returns:
        ``matched_gt`` ``(B, A)`` int64: index into G of the box each anchor is assigned to, -1 for
        background; ``matched_iou`` ``(B, A)`` fp32: its IoU, 0 for background.

    The fused backends never build ``(A, G)`` matrices: memory O(B*G*levels*k + B*A).
    """
    sizes = validate(anchors, num_anchors_per_level, gt_boxes, gt_mask, topk, anchors_per_location, convention)
    if gt_mask is None:
        gt_mask = torch.ones(gt_boxes.shape[:2], dtype=torch.bool, device=gt_boxes.device)
    inputs = dict(anchors=anchors, sizes=sizes, gt_boxes=gt_boxes, gt_mask=gt_mask, topk=topk,
                  anchors_per_location=anchors_per_location, convention=convention,
                  topk_total=topk * anchors_per_location, glip=CONVENTIONS[convention].boxes == "glip")
    chosen = dispatch.select_backend(OP, dispatch.DeviceInfo.of(gt_boxes), backend, inputs)
    return chosen.impl(**inputs)


def atss_targets(anchors: torch.Tensor, matched_gt: torch.Tensor, gt_boxes: torch.Tensor, *,
                 convention: str = "glip") -> tuple[torch.Tensor, torch.Tensor]:
    """Regression and centerness targets of the anchors ``atss_assign`` matched.

    anchors ``(A, 4)`` or ``(B, A, 4)`` fp32, matched_gt ``(B, A)`` int64 (-1 background), gt_boxes
    ``(B, G, 4)`` fp32. Returns regression targets ``(B, A, 4)`` (``"glip"``: GLIP's box coder, weights
    10, 10, 5, 5, +1 widths; ``"mmdet"``: DeltaXYWH with stds 0.1, 0.1, 0.2, 0.2) and centerness
    ``(B, A)`` fp32; background anchors get zeros.
    """
    check_tensor("anchors", anchors, ndim=(2, 3), dtypes=(torch.float32,), shape_doc="(A, 4) or (B, A, 4)",
                 allow_empty=True)
    check_tensor("matched_gt", matched_gt, ndim=2, dtypes=(torch.int64,), shape_doc="(B, A)", allow_empty=True)
    check_tensor("gt_boxes", gt_boxes, ndim=3, dtypes=(torch.float32,), shape_doc="(B, G, 4)", allow_empty=True)
    check_same_device(anchors=anchors, matched_gt=matched_gt, gt_boxes=gt_boxes)
    check_choice("convention", convention, tuple(CONVENTIONS))
    batch, num_anchors = matched_gt.shape
    if anchors.shape[-2:] != (num_anchors, 4) or (anchors.dim() == 3 and anchors.shape[0] != batch):
        raise ValueError(f"anchors must be (A, 4) or (B, A, 4) with (B, A) = {(batch, num_anchors)} of matched_gt, "
                         f"got {tuple(anchors.shape)}")
    if gt_boxes.shape[0] != batch or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (B, G, 4) with B = {batch} of matched_gt, got {tuple(gt_boxes.shape)}")
    if reads_values(anchors, matched_gt, gt_boxes):
        _check_targets_values(anchors, matched_gt, gt_boxes)
    return targets_for(anchors, matched_gt, gt_boxes, CONVENTIONS[convention].boxes)


def _check_targets_values(anchors: torch.Tensor, matched_gt: torch.Tensor, gt_boxes: torch.Tensor) -> None:
    """matched_gt in [-1, G); the anchors and every box some anchor is matched to finite and not inverted
    (as ``atss_assign`` requires; unmatched padding boxes are not read)."""
    if matched_gt.numel() and (int(matched_gt.min()) < -1 or int(matched_gt.max()) >= gt_boxes.shape[1]):
        raise ValueError(f"matched_gt must hold -1 or box indices in [0, G = {gt_boxes.shape[1]}), "
                         f"got values in [{int(matched_gt.min())}, {int(matched_gt.max())}]")
    _check_boxes("anchors", anchors)
    used = torch.zeros((gt_boxes.shape[0], gt_boxes.shape[1] + 1), dtype=torch.bool, device=gt_boxes.device)
    used.scatter_(1, matched_gt + 1, True)  # column 0 collects the -1 (background) entries
    _check_boxes("gt_boxes", gt_boxes, used[:, 1:])


def cpp_available() -> bool:
    """True when ``fiber_kernels._C`` has the C++ CPU kernel of ``atss_assign``."""
    return _extension.has_kernel(OP, "CPU")
