"""Ahead-of-time compile of the ATSS Triton kernels for sm80 and sm90: they must fit the card and
spill nothing (no tensor cores expected: the kernels do no matmul)."""

from __future__ import annotations

import pytest
from fiber_kernels.atss.triton_atss import CONFIGS, K_PADS, _atss_candidates_kernel, _atss_resolve_kernel
from fiber_kernels.testing.aot import CompileSpec, compile_reports, fit_problems

CANDIDATES_SIGNATURE = {
    "anchors_ptr": "*fp32", "level_starts_ptr": "*i64", "gt_ptr": "*fp32", "mask_ptr": "*i8", "claims_ptr": "*i64",
    "num_boxes": "i32", "num_anchors": "i32", "num_levels": "i32", "topk_total": "i32", "stride_anchor_batch": "i32",
}
RESOLVE_SIGNATURE = {"claims_ptr": "*i64", "matched_ptr": "*i64", "iou_ptr": "*fp32", "total": "i32"}
CARDS = {80: "A100", 90: "H100"}


def _specs() -> list[CompileSpec]:
    block, warps = CONFIGS[-1]
    specs = []
    for capability in CARDS:
        # the smallest and the largest register width, one per convention
        for k_pad, glip in ((K_PADS[0], True), (K_PADS[-1], False)):
            constexprs = {"GLIP": glip, "ONE": 1.0 if glip else 0.0, "L_PAD": 8, "K_PAD": k_pad, "BLOCK": block}
            specs.append(CompileSpec(_atss_candidates_kernel, CANDIDATES_SIGNATURE, constexprs, capability, warps, 1))
        specs.append(CompileSpec(_atss_resolve_kernel, RESOLVE_SIGNATURE, {"BLOCK": 1024}, capability, 4, 1))
    return specs


@pytest.mark.compile
def test_atss_kernels_compile_for_sm80_and_sm90_without_spills() -> None:
    reports = compile_reports(_specs())
    for report in reports:
        print(report)
        assert fit_problems(report, CARDS[report.capability], require_tensor_cores=False) == [], str(report)
        assert not report.spills
