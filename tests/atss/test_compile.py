"""Ahead-of-time compile of the ATSS Triton kernels for sm80 and sm90, with the launcher's compile options
(``enable_fp_fusion=False``): every variant the launcher can pick (K_PAD x L_PAD, both conventions) must
fit the card, spill nothing and hold no FMA (no tensor cores expected: the kernels do no matmul)."""

from __future__ import annotations

import itertools

import pytest
from fiber_kernels.atss.triton_atss import (
    BLOCK,
    COMPILE_OPTIONS,
    K_PADS,
    MAX_LEVELS,
    NUM_STAGES,
    NUM_WARPS,
    RESOLVE_BLOCK,
    _atss_candidates_kernel,
    _atss_resolve_kernel,
    k_pad_for,
    l_pad_for,
)
from fiber_kernels.testing.aot import CompileSpec, compile_reports, fit_problems

pytestmark = pytest.mark.compile

CANDIDATES_SIGNATURE = {
    "anchors_ptr": "*fp32", "level_starts_ptr": "*i64", "gt_ptr": "*fp32", "mask_ptr": "*i8", "claims_ptr": "*i64",
    "num_boxes": "i32", "num_anchors": "i32", "num_levels": "i32", "topk_total": "i32", "stride_anchor_batch": "i32",
}
RESOLVE_SIGNATURE = {"claims_ptr": "*i64", "matched_ptr": "*i64", "iou_ptr": "*fp32", "total": "i32"}
CARDS = {80: "A100", 90: "H100"}
# What the launcher can select: every register width and row count its pickers return.
LAUNCH_K_PADS = sorted({k_pad_for(total) for total in range(1, K_PADS[-1] + 1)})
LAUNCH_L_PADS = sorted({l_pad_for(levels) for levels in range(1, MAX_LEVELS + 1)})


def _candidates(k_pad: int, l_pad: int, glip: bool, capability: int) -> CompileSpec:
    constexprs = {"GLIP": glip, "ONE": 1.0 if glip else 0.0, "L_PAD": l_pad, "K_PAD": k_pad, "BLOCK": BLOCK}
    return CompileSpec(_atss_candidates_kernel, CANDIDATES_SIGNATURE, constexprs, capability, NUM_WARPS,
                       NUM_STAGES, COMPILE_OPTIONS)


def _resolve(capability: int) -> CompileSpec:
    return CompileSpec(_atss_resolve_kernel, RESOLVE_SIGNATURE, {"BLOCK": RESOLVE_BLOCK}, capability, NUM_WARPS,
                       NUM_STAGES, COMPILE_OPTIONS)


def test_launcher_choices_cover_the_shipped_lists() -> None:
    assert LAUNCH_K_PADS == list(K_PADS) and LAUNCH_L_PADS == [2, 4, 8]


def test_every_launch_variant_compiles_for_sm80_and_sm90_without_spills_or_fma() -> None:
    grid = itertools.product(CARDS, LAUNCH_K_PADS, LAUNCH_L_PADS, (True, False))
    specs = [_candidates(k_pad, l_pad, glip, capability) for capability, k_pad, l_pad, glip in grid]
    specs += [_resolve(capability) for capability in CARDS]
    for report in compile_reports(specs):
        print(report)
        assert report.options == COMPILE_OPTIONS and report.fma_instructions == 0, str(report)
        assert fit_problems(report, CARDS[report.capability], require_tensor_cores=False) == [], str(report)
