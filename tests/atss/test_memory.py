"""The fused backends never hold (A, G) matrices: their peak live tensor bytes stay O(B*A), while the
per-image reference allocates several (A, G) fp32 matrices (testing.memory.peak_bytes)."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.testing.memory import peak_bytes

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
