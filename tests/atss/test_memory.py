"""The fused backends never hold (A, G) matrices: their peak live tensor bytes stay O(B*A), while the
per-image reference allocates several (A, G) fp32 matrices (testing.memory.peak_bytes); the Triton
launcher allocates exactly its ``work_buffers``."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.triton_atss import atss_assign_triton, work_buffers
from fiber_kernels.testing.memory import peak_bytes
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ._cases import FIBER, SMALL, pyramid, random_boxes


def _peak(backend: str, anchors: torch.Tensor, sizes: list[int], boxes: torch.Tensor) -> int:
    # peak_bytes needs a differentiable output: a 0-d probe added to the summed IoUs
    probe = torch.zeros((), requires_grad=True)
    return peak_bytes(lambda a, b, p: atss_assign(a, sizes, b, backend=backend)[1].sum() + p, anchors, boxes, probe)


@pytest.mark.parametrize("backend", [
    "triton",
    pytest.param("cpp", marks=pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign")),
])
def test_fused_peak_memory_has_no_anchor_by_box_matrix(backend: str) -> None:
    gen = torch.Generator().manual_seed(2)
    levels, count = (FIBER, 200) if backend == "cpp" else (SMALL, 40)  # the interpreter stays small
    anchors, sizes = pyramid(levels)
    width, height = levels[0][1] * levels[0][2], levels[0][0] * levels[0][2]
    boxes = random_boxes(1, count, width, height, gen, max_size=min(width, height) / 2)
    num_anchors = anchors.shape[0]
    inputs = anchors.numel() * 4 + boxes.numel() * 4
    # per anchor: outputs (int64 + fp32), claims (int64), the input checks' bool temporaries (isfinite
    # of (A, 4): 3 x 4 B); plus the mask, level starts and scalars
    fused_bound = inputs + num_anchors * 40 + count * 2 + 1024
    reference = _peak("torch", anchors, sizes, boxes)
    fused = _peak(backend, anchors, sizes, boxes)
    assert reference > 3 * num_anchors * count * 4  # several (A, G) fp32 matrices
    assert fused <= fused_bound, (fused, fused_bound)


class _NewStorages(TorchDispatchMode):
    """Records (shape, dtype, bytes) of every tensor whose storage an op creates while the mode is on."""

    def __init__(self, known: list[torch.Tensor]) -> None:
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.created: list[tuple[tuple[int, ...], torch.dtype, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in self.known:
                self.known.add(tensor.untyped_storage().data_ptr())
                self.created.append((tuple(tensor.shape), tensor.dtype, tensor.untyped_storage().nbytes()))
        return out


@pytest.mark.parametrize("batch,count", [(2, 3), (1, 0)])
def test_triton_launcher_allocates_its_plan(batch: int, count: int) -> None:
    """The launcher's real allocations, recorded op by op, are ``work_buffers``: what the benchmark's
    workspace figure is counted from."""
    anchors, sizes = pyramid(SMALL)
    boxes = random_boxes(batch, count, 96.0, 64.0, torch.Generator().manual_seed(5))
    mask = torch.ones(batch, count, dtype=torch.bool)
    starts = torch.tensor([0] + sizes).cumsum(0)
    inputs = [anchors[None].contiguous(), starts, boxes, mask]
    with _NewStorages(inputs) as recorder:
        matched, _ = atss_assign_triton(inputs[0], starts, boxes, mask, 9, True)
    plan = work_buffers(batch, count, anchors.shape[0])
    # the interpreter itself may make empty tensors; every byte-holding allocation is in the plan
    assert [c for c in recorder.created if c[2] > 0] == [(a.shape, a.dtype, a.nbytes) for a in plan]
    assert [a.name for a in plan] == ["matched", "matched_iou", "claims"] + (["mask"] if count else [])
    assert sum(a.nbytes for a in plan) == batch * anchors.shape[0] * 20 + (batch * count if count else 0)
    assert matched.shape == (batch, anchors.shape[0])


def test_triton_launcher_needs_contiguous_inputs() -> None:
    anchors, sizes = pyramid(SMALL)
    boxes = random_boxes(1, 2, 96.0, 64.0, torch.Generator().manual_seed(5))
    starts = torch.tensor([0] + sizes).cumsum(0)
    with pytest.raises(ValueError, match="needs contiguous anchors, gt_boxes and gt_mask"):
        atss_assign_triton(anchors[None], starts, boxes.repeat(1, 1, 2)[..., :4],
                           torch.ones(1, 2, dtype=torch.bool), 9, True)
