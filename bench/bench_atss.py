"""ATSS assignment (``fiber_kernels.atss``): the C++ CPU kernel against the GLIP-style per-image loop
(``atss_assign_reference``, the test oracle) and a dense batched PyTorch version (mmyolo style,
``(B, A, G)`` tensors), at FIBER's fine-grained shape: 800 x 1344, P3-P7 (strides 8-128), one anchor
per location (22400 anchors), batch 8, 10 / 50 / 200 boxes per image; plus a batch-2 quick shape.

Figures: measured CPU time (fp32; the Triton kernel runs here only in the interpreter, so its
times are skipped), peak live tensor bytes on the CPU (``testing.memory.peak_bytes``: tensors only;
the C++ kernel's internal workspace, std::vector, is invisible to it and is given exactly in each
row's note), and projected GPU time: a roofline lower bound max(FLOPs / fp32 peak, HBM bytes /
bandwidth). For the PyTorch providers the bytes are counted op by op
(``testing.roofline.count_flops_and_bytes`` on the real CPU run, the same aten ops a GPU would run;
``FlopCounterMode`` counts no elementwise FLOPs, and they are memory-bound); for the Triton kernel
both are the analytic counts of ``triton_flops`` and ``triton_bytes`` (anchors read once, as they
stay in L2). Projections ignore launch latency (the per-image loop launches ~100 ops per image)
and the serial top-k insertions, so they are optimistic, the Triton one most of all.
"""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.anchors import FIBER_LEVELS, pyramid
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.dense import atss_assign_dense
from fiber_kernels.atss.reference import atss_assign_reference

from bench.harness import (
    Case,
    KernelBench,
    Provider,
    Recorder,
    Row,
    Shape,
    run_memory,
    run_speed,
    triton_reason,
)

TOPK = 9
IMAGE_HEIGHT, IMAGE_WIDTH = 800.0, 1344.0
LEVEL_SIZES = [h * w for h, w, _, _ in FIBER_LEVELS]
GPUS = ("V100", "A100", "H100")


def _cpp_reason(device: torch.device, purpose: str) -> str | None:
    if device.type != "cpu":
        return "the C++ kernel serves CPU tensors"
    if not cpp_available():
        return "fiber_kernels._C has no atss_assign CPU kernel (not built)"
    return None


def _triton_reason(device: torch.device, purpose: str) -> str | None:
    if device.type == "cpu" and purpose == "memory":
        return ("the Triton interpreter takes minutes at 22400 anchors; the fused path allocates only its "
                "outputs and the (B, A) int64 claim buffer (see the projection note)")
    return triton_reason(device, purpose)


PROVIDERS = (Provider("cpp", _cpp_reason), Provider("glip_loop"), Provider("dense_torch"),
             Provider("triton", _triton_reason))


def _shape(label: str, batch: int, boxes: int, quick: bool = False) -> Shape:
    return Shape(label, {"B": batch, "A": sum(LEVEL_SIZES), "G": boxes, "L": len(LEVEL_SIZES)}, quick=quick)


SHAPES = (_shape("fiber_b2_g10", 2, 10, quick=True), _shape("fiber_b8_g10", 8, 10), _shape("fiber_b8_g50", 8, 50),
          _shape("fiber_b8_g200", 8, 200))


def _inputs(shape: Shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared anchors (A, 4), boxes (B, G, 4) of 8-600 px inside the image, mask (B, G) with images holding
    G, G - 1, ... boxes (a padded batch)."""
    gen = torch.Generator().manual_seed(0)
    batch, count = shape.dims["B"], shape.dims["G"]
    anchors, _ = pyramid(FIBER_LEVELS)
    wh = torch.rand(batch, count, 2, generator=gen) * 592 + 8
    xy = torch.rand(batch, count, 2, generator=gen) * (torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT]) - wh)
    boxes = torch.cat([xy, xy + wh], -1)
    mask = torch.arange(count)[None, :] < (count - torch.arange(batch))[:, None].clamp(min=1)
    return anchors.to(device), boxes.to(device), mask.to(device)


def cpp_workspace_bytes(shape: Shape, threads: int) -> int:
    """Bytes of the C++ kernel's std::vector workspace: candidates (B*G*L*k anchor int32 + IoU fp32),
    anchor centres (2 * A fp32), and one (A,) int64 claim buffer per thread."""
    dims = shape.dims
    return dims["B"] * dims["G"] * dims["L"] * TOPK * 8 + 2 * dims["A"] * 4 + threads * dims["A"] * 8


def triton_bytes(shape: Shape) -> int:
    """HBM bytes of the Triton path: anchors read once (22400 x 16 B stay in L2 across the B*G programs),
    level starts, boxes and the int8 mask per program, the (B, A) int64 claims filled, atomically updated
    (counted as one read + one write per claim) and read back, and the int64 + fp32 outputs written."""
    dims = shape.dims
    batch_anchors = dims["B"] * dims["A"]
    return (dims["A"] * 16 + (dims["L"] + 1) * 8 + dims["B"] * dims["G"] * (16 + 1)
            + batch_anchors * 8 * 4 + batch_anchors * (8 + 4))


def triton_flops(shape: Shape) -> int:
    """fp32 operations of the Triton path: per (box, anchor) pair of the scan, the anchor centre (4),
    the offset to the box centre (2), the squared distance (3) and its square root (1); the IoUs,
    statistics and claims of the B*G*L*k candidates are negligible beside it."""
    dims = shape.dims
    return 10 * dims["B"] * dims["G"] * dims["A"]


def build(provider: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Case:
    """One provider's assignment; assignment is fp32 only, whatever ``dtype`` the harness asks for.

    ``fn`` returns ``matched_iou.sum() + probe`` (``probe`` a 0-d input with requires_grad), because the
    memory toolkit measures a forward + backward of a differentiable output; the sum costs B*A adds for
    every provider alike, and the (B, A) outputs are live (and counted) before it.
    """
    anchors, boxes, mask = _inputs(shape, device)
    probe = torch.zeros((), device=device, requires_grad=True)
    if provider == "glip_loop":
        def assign(a, b, m):
            return atss_assign_reference(a, LEVEL_SIZES, b, m, topk=TOPK)
    elif provider == "dense_torch":
        def assign(a, b, m):
            return atss_assign_dense(a, LEVEL_SIZES, b, m, topk=TOPK)
    else:
        def assign(a, b, m):
            return atss_assign(a, LEVEL_SIZES, b, m, topk=TOPK, backend=provider)

    def fn(a, b, m, p):
        return assign(a, b, m)[1].sum() + p

    note = ""
    if provider == "cpp":
        threads = torch.get_num_threads()
        note = (f"plus {cpp_workspace_bytes(shape, threads)} B of C++ workspace ({threads} threads), "
                "not seen by peak_bytes")
    return Case(fn, (anchors, boxes, mask, probe), note=note)


OP = KernelBench("atss_assign", PROVIDERS, SHAPES, build, modes=("fwd",))


@pytest.mark.parametrize("provider,shape,mode", OP.speed_params())
def test_speed(benchmark, recorder: Recorder, provider: str, shape: Shape, mode: str) -> None:
    run_speed(benchmark, recorder, OP, provider, shape, mode, device="cpu")


@pytest.mark.parametrize("provider,shape", OP.shape_params(quick_all=False))
def test_memory(recorder: Recorder, provider: str, shape: Shape) -> None:
    run_memory(recorder, OP, provider, shape, device="cpu")


@pytest.mark.parametrize("provider,shape", OP.shape_params(quick_all=False))
def test_projection(recorder: Recorder, provider: str, shape: Shape) -> None:
    from fiber_kernels.testing.roofline import count_flops_and_bytes, project_time

    if provider == "cpp":
        recorder.skip(OP.kernel, provider, "fwd", shape, "a CPU kernel: nothing to project on a GPU", "fp32")
    if provider == "triton":
        flops, moved = triton_flops(shape), triton_bytes(shape)
        how = f"analytic: {flops:.4g} fp32 FLOP (triton_flops), {moved:.4g} HBM B (triton_bytes)"
    else:
        case = build(provider, shape, torch.device("cpu"), torch.float32)
        flops, moved = count_flops_and_bytes(case.fn, *case.inputs)
        how = f"aten bytes read + written, counted op by op: {moved:.4g} B (elementwise FLOPs not counted)"
    rows = [Row(OP.kernel, provider, "fwd", shape.label, shape.dims, "projected_time",
                project_time(flops, moved, gpu, torch.float32), dtype="fp32", device=gpu,
                note=f"roofline lower bound, no launch latency; {how}")
            for gpu in GPUS]
    recorder.add(rows)
