"""The CUDA kernels of csrc/atss: run under the host emulation (csrc/emu, docs/emulation.md) against the
reference on the adversarial cases and a FIBER-size batch, under several thread schedules; and
compiled for sm70 (NVRTC 12), sm80 and sm90 (nvcc 13, with setup.py's --use_fast_math) without spills."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from fiber_kernels.atss.reference import atss_assign_reference
from fiber_kernels.testing import emu, nvcc_report, nvcc_unavailable_reason

from ._cases import FIBER, adversarial_cases, pyramid, random_boxes
from .conftest import assert_same
from .test_validation import BAD_OP, op_arguments

CASES = {case.name: case for case in adversarial_cases()}


def run_emulated(module, anchors, sizes, boxes, mask, topk_total, convention, seed):
    batched = anchors[None] if anchors.dim() == 2 else anchors
    mask = torch.ones(boxes.shape[:2], dtype=torch.bool) if mask is None else mask
    starts = torch.tensor([0] + list(sizes)).cumsum(0)
    return module.atss_assign_fwd(batched, starts, boxes, mask, topk_total, convention == "glip", seed=seed)


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("convention", ["glip", "mmdet"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_emulated_cuda_kernel_matches_reference(atss_emu, name: str, convention: str, seed: int) -> None:
    case = CASES[name]
    want = atss_assign_reference(case.anchors, case.sizes, case.gt_boxes, case.gt_mask,
                                 anchors_per_location=case.anchors_per_location, convention=convention)
    got = run_emulated(atss_emu, case.anchors, case.sizes, case.gt_boxes, case.gt_mask,
                       9 * case.anchors_per_location, convention, seed)
    assert_same(got, want)


def test_emulated_cuda_kernel_fiber_pyramid(atss_emu) -> None:
    """22400 anchors (800 x 1344, strides 8-128), 2 images with 4 and 2 boxes."""
    gen = torch.Generator().manual_seed(9)
    anchors, sizes = pyramid(FIBER)
    boxes = random_boxes(2, 4, 1344.0, 800.0, gen, max_size=600.0)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    want = atss_assign_reference(anchors, sizes, boxes, mask)
    assert int((want[0] >= 0).sum()) > 20
    assert_same(run_emulated(atss_emu, anchors, sizes, boxes, mask, 9, "glip", 3), want)


def test_emulated_launcher_rejects_large_k(atss_emu) -> None:
    anchors, sizes = pyramid([(4, 4, 8.0, 16.0)])
    with pytest.raises(RuntimeError, match="topk \\* anchors_per_location must be <= 128, got 135"):
        run_emulated(atss_emu, anchors, sizes, torch.tensor([[[0.0, 0.0, 9.0, 9.0]]]), None, 135, "glip", 0)


@pytest.mark.parametrize("name,change,message", BAD_OP, ids=[case[0] for case in BAD_OP])
def test_emulated_launcher_checks_its_inputs(atss_emu, name: str, change: dict, message: str) -> None:
    with pytest.raises(RuntimeError, match=f"atss_assign_fwd: {message}"):
        atss_emu.atss_assign_fwd(*op_arguments(change), seed=0)


def _include_dirs() -> list[str]:
    dirs = list(emu.CSRC_INCLUDE_DIRS)
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")  # NVRTC 12 (sm70): crt/ headers of the nvcc wheel
    for root in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isdir(os.path.join(root, "include", "crt")):
            dirs.append(os.path.join(root, "include"))
    return dirs


@pytest.mark.compile
@pytest.mark.parametrize("arch", [70, 80, 90])
def test_cuda_kernels_compile_without_spills(arch: int, tmp_path) -> None:
    reason = nvcc_unavailable_reason(arch)
    if reason:
        pytest.skip(reason)
    source = tmp_path / "atss_kernels.cu"
    source.write_text('#include "atss/atss_kernel.cuh"\n')  # the kernels atss_cuda.cu launches, without torch
    flags = ["--use_fast_math"] if nvcc_unavailable_reason(arch, compiler="nvcc") is None else []
    reports = nvcc_report(source, arch, include_dirs=_include_dirs(), extra_flags=flags)
    names = [report.name for report in reports]
    for kernel in ("atss_candidates_kernel", "atss_resolve_kernel"):
        assert sum(kernel in name for name in names) == 1, names
    for report in reports:
        print(report)
        assert not report.spills, f"{report.name} spills on sm_{arch}"
        assert report.registers * 128 <= 65536
