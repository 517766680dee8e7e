"""ATSS assignment (``fiber_kernels.atss``): the C++ CPU kernel against the GLIP-style per-image loop
(``atss_assign_reference``, the test oracle) and a dense batched PyTorch version (mmyolo style,
``(B, A, G)`` tensors), at FIBER's fine-grained shape: 800 x 1344, P3-P7 (strides 8-128), one anchor
per location (22400 anchors), batch 8, 10 / 50 / 200 boxes per image; plus a batch-2 quick shape.
``test_cpu_ratio_vs_glip_loop`` times the C++ kernel against the GLIP loop at 10 / 20 / 50 / 100 / 200 boxes
per image with 1 and 2 threads, alternating call by call (min of N calls each, as other jobs load the CPU; the
ratios loop / C++ and C++ 2 threads / 1 thread in the notes).

Figures: measured time (fp32; on the CPU unless ``--bench-device cuda``; the Triton kernel runs on
a CPU only in the interpreter, so its CPU times are skipped), peak live tensor bytes on the CPU
(``testing.memory.peak_bytes``: tensors only; the C++ kernel's internal workspace, std::vector, is
invisible to it and is given exactly in each row's note, counted from the allocations of
csrc/atss/atss_cpu.cpp; the Triton path cannot run at this size in the interpreter, nor on fake
tensors (it is no custom op), so its device bytes are counted from the launcher's own allocations,
``triton_atss.work_buffers``, which a test matches against the recorded allocations), and projected
GPU time: a roofline lower bound max(FLOPs / fp32 peak, HBM bytes /
bandwidth). For the PyTorch providers the bytes are counted op by op
(``testing.roofline.count_flops_and_bytes`` on the real CPU run, the same aten ops a GPU would run;
``FlopCounterMode`` counts no elementwise FLOPs, and they are memory-bound); for the Triton kernel
both are the analytic counts of ``triton_flops`` and ``triton_bytes`` (anchors read once, as they
stay in L2). Projections ignore launch latency (the per-image loop launches ~100 ops per image)
and the serial top-k insertions, so they are optimistic, the Triton one most of all.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.anchors import FIBER_LEVELS, pyramid
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.dense import atss_assign_dense
from fiber_kernels.atss.reference import atss_assign_reference
from fiber_kernels.atss.triton_atss import work_buffers

from bench.harness import (
    Case,
    KernelBench,
    Provider,
    Recorder,
    Row,
    Shape,
    benchmark_tests,
    device_name,
    run_memory,
    summarize,
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


PROVIDERS = (Provider("cpp", _cpp_reason), Provider("glip_loop"), Provider("dense_torch"),
             Provider("triton", triton_reason))


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
    """Peak bytes of the C++ kernel's own workspace (std::vector and new[]), counted from csrc/atss/atss_cpu.cpp for
    shared anchors: anchor centres cx, cy (2 * A fp32), the candidate rows (B*G*L*k anchor int32 + IoU fp32, in
    chunks), each box's column (B*G int64), and per thread one NearestK (k uint64 keys + k fp32); the claims live in
    the int64 output. Left out: each level's grid ranges (2 fp32 per row and per column, 4.1 KiB at 800x1344), a
    few per-image counts, the list of claimed anchors (int64, one per anchor some box claims), and with 2+ threads
    the rows of a chunk a helper and the caller both computed (at most one chunk, ~25 us of work, per helper)."""
    dims = shape.dims
    batch, boxes, anchors = dims["B"], dims["G"], dims["A"]
    return 2 * anchors * 4 + batch * boxes * (dims["L"] * TOPK * (4 + 4) + 8) + threads * TOPK * (8 + 4)


def triton_allocation_note(shape: Shape) -> str:
    """The Triton launcher's device allocations for ``shape``, counted from ``work_buffers``."""
    plan = work_buffers(shape.dims["B"], shape.dims["G"], shape.dims["A"])
    parts = ", ".join(f"{a.name} {a.nbytes} B" for a in plan)
    workspace = sum(a.nbytes for a in plan if a.name in ("claims", "mask"))
    return (f"Triton launcher allocates {sum(a.nbytes for a in plan)} B ({parts}; workspace claims + mask "
            f"{workspace} B), counted from its allocations (triton_atss.work_buffers), not measured")


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
        note = (f"plus {cpp_workspace_bytes(shape, threads)} B of C++ workspace ({threads} threads), counted from "
                "the allocations of csrc/atss/atss_cpu.cpp, not seen by peak_bytes")
    elif provider == "triton":
        note = triton_allocation_note(shape)
    return Case(fn, (anchors, boxes, mask, probe), note=note)


OP = KernelBench("atss_assign", PROVIDERS, SHAPES, build, modes=("fwd",))


# The standard speed test; memory and projection differ from the standard ones: the reference loop and
# the dense version have data-dependent shapes, so they run on real CPU tensors, not fake CUDA ones.
test_speed = benchmark_tests(OP)[0]


@pytest.mark.parametrize("provider,shape", OP.shape_params(quick_all=False))
def test_memory(recorder: Recorder, provider: str, shape: Shape) -> None:
    if provider == "triton":
        recorder.skip(OP.kernel, provider, "full", shape, "the Triton interpreter takes minutes at 22400 anchors; "
                      + triton_allocation_note(shape), "fp32", device_name(torch.device("cpu")))
    run_memory(recorder, OP, provider, shape, device="cpu")


@pytest.mark.parametrize("provider,shape", OP.shape_params(quick_all=False))
def test_projection(recorder: Recorder, provider: str, shape: Shape) -> None:
    from fiber_kernels.testing.roofline import count_flops_and_bytes, project_time

    if provider == "cpp":
        recorder.skip(OP.kernel, provider, "fwd", shape, "a CPU kernel: nothing to project on a GPU", "fp32")
    if provider == "triton":
        flops, moved = triton_flops(shape), triton_bytes(shape)
        how = (f"analytic: {flops:.4g} fp32 FLOP (triton_flops), {moved:.4g} HBM B (triton_bytes); "
               f"{triton_allocation_note(shape)}")
    else:
        case = build(provider, shape, torch.device("cpu"), torch.float32)
        flops, moved = count_flops_and_bytes(case.fn, *case.inputs)
        how = f"aten bytes read + written, counted op by op: {moved:.4g} B (elementwise FLOPs not counted)"
    rows = [Row(OP.kernel, provider, "fwd", shape.label, shape.dims, "projected_time",
                project_time(flops, moved, gpu, torch.float32), dtype="fp32", device=gpu,
                note=f"roofline lower bound, no launch latency; {how}")
            for gpu in GPUS]
    recorder.add(rows)


RATIO_BOXES = (10, 20, 50, 100, 200)
RATIO_THREADS = (1, 2)


def alternating_times(fn, repeats: int, pause: float) -> dict[int, list[float]]:
    """Times (seconds) of ``repeats`` rounds of one call per thread count of ``RATIO_THREADS``
    (``torch.set_num_threads``), so every count sees the same machine load; ``pause`` seconds before each
    call: a helper thread that ran the previous call may still be spinning, taking a core from the call
    when other jobs hold the other."""
    times: dict[int, list[float]] = {threads: [] for threads in RATIO_THREADS}
    previous = torch.get_num_threads()
    try:
        for _ in range(repeats):
            for threads in RATIO_THREADS:
                torch.set_num_threads(threads)
                time.sleep(pause)
                start = time.perf_counter()
                fn()
                times[threads].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return times


@pytest.mark.parametrize("boxes", RATIO_BOXES)
def test_cpu_ratio_vs_glip_loop(recorder: Recorder, boxes: int) -> None:
    """Speed-up of the C++ kernel over the GLIP per-image loop at 1 and 2 threads, and the C++ kernel's
    2-thread / 1-thread time: rows ``time`` of ``cpp`` and ``glip_loop`` per thread count (shape
    ``fiber_b8_g{boxes}_t{threads}``; median = the minimum of the calls, other jobs on the machine only ever
    add time; p20/p80 over all calls). The thread counts alternate call by call; the notes give both ratios."""
    shapes = {threads: _shape(f"fiber_b8_g{boxes}_t{threads}", 8, boxes) for threads in RATIO_THREADS}
    reason = _cpp_reason(torch.device("cpu"), "time")
    if reason:
        recorder.skip(OP.kernel, "cpp", "fwd", shapes[1], reason, "fp32")
    anchors, gt_boxes, mask = _inputs(shapes[1], torch.device("cpu"))
    load = os.getloadavg()[0]
    timed = {"cpp": alternating_times(lambda: atss_assign(anchors, LEVEL_SIZES, gt_boxes, mask, topk=TOPK,
                                                          backend="cpp"), 15, 0.05),
             "glip_loop": alternating_times(lambda: atss_assign_reference(anchors, LEVEL_SIZES, gt_boxes, mask,
                                                                          topk=TOPK), 3, 0.0)}
    best = {name: {threads: min(times) for threads, times in by_threads.items()} for name, by_threads in timed.items()}
    threads_ratio = best["cpp"][2] / best["cpp"][1]
    for name, by_threads in timed.items():
        for threads, times in by_threads.items():
            _, p20, p80, rounds = summarize(times)
            spacing = "50 ms apart" if name == "cpp" else "back to back"
            recorder.add([Row(OP.kernel, name, "fwd", shapes[threads].label, shapes[threads].dims, "time",
                              best[name][threads], p20, p80, rounds, "fp32",
                              note=f"min of {rounds} calls ({spacing}, alternating with the other thread count), "
                                   f"{threads} thread(s); GLIP loop / C++ = "
                                   f"{best['glip_loop'][threads] / best['cpp'][threads]:.1f}x; C++ 2 threads / "
                                   f"1 thread = {threads_ratio:.2f}; load average {load:.1f} at start")])
