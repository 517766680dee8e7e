"""Regression tests of issue 11 for ATSS (each names its item): fake/meta tensors, torch.compile and the
value-check switch (4), zero images on the torch backend (5), the C++ kernel's buffers under a huge topk
(6), the C++ op's own checks (7), and atss_targets rejecting the boxes atss_assign rejects (8)."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels import atss_assign, atss_targets, value_checks
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.reference import atss_assign_reference
from torch._subclasses.fake_tensor import FakeTensorMode

from ._cases import SMALL, pyramid, random_boxes

ANCHORS, SIZES = pyramid(SMALL)  # 126 anchors: 96 + 24 + 6
BOXES = random_boxes(2, 3, 96.0, 64.0, torch.Generator().manual_seed(5), max_size=40.0)
MASK = torch.tensor([[True, True, True], [True, False, True]])
NEEDS_CPP = pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel")
BACKENDS = ["torch", "triton"] + (["cpp"] if cpp_available() else [])


# ---- item 4: metadata-only validation, fake/meta tensors, torch.compile --------------------------------

@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_item4_assign_and_targets_propagate_shapes_on_fake_tensors(backend):
    """Item 4: validation read values (``bool(isfinite(...))``) and failed on fake tensors."""
    with FakeTensorMode() as mode:
        anchors, boxes, mask = (mode.from_tensor(t) for t in (ANCHORS, BOXES, MASK))
        matched, iou = atss_assign(anchors, SIZES, boxes, mask, backend=backend)
        regression, centerness = atss_targets(anchors, matched, boxes)
    assert (matched.shape, matched.dtype, iou.shape, iou.dtype) == ((2, 126), torch.int64, (2, 126), torch.float32)
    assert regression.shape == (2, 126, 4) and centerness.shape == (2, 126)


def test_item4_assign_and_targets_propagate_shapes_on_meta_tensors():
    anchors, boxes, mask = (t.to("meta") for t in (ANCHORS, BOXES, MASK))
    matched, iou = atss_assign(anchors, SIZES, boxes, mask)
    regression, centerness = atss_targets(anchors, matched, boxes)
    assert matched.device.type == "meta" and (matched.shape, iou.dtype) == ((2, 126), torch.float32)
    assert regression.shape == (2, 126, 4) and centerness.device.type == "meta"


@pytest.mark.parametrize("backend", (["cpp"] if cpp_available() else []) + ["triton"])
def test_item4_compiles_with_fullgraph_and_matches_eager(backend):
    """Item 4: torch.compile(fullgraph=True) broke on the value checks and on the Triton launcher (now the
    custom op ``fiber_kernels::atss_assign``)."""
    def assign_and_targets(anchors, boxes, mask):
        matched, iou = atss_assign(anchors, SIZES, boxes, mask, backend=backend)
        return (matched, iou) + atss_targets(anchors, matched, boxes)

    compiled = torch.compile(assign_and_targets, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(ANCHORS, BOXES, MASK), assign_and_targets(ANCHORS, BOXES, MASK), strict=True):
        assert torch.equal(got, want)
    torch._dynamo.reset()


def test_item4_triton_launcher_is_a_custom_op():
    args = (ANCHORS[None], torch.tensor([0] + SIZES).cumsum(0), BOXES, MASK, 9, True)
    torch.library.opcheck(torch.ops.fiber_kernels.atss_assign, args, test_utils=("test_schema", "test_faketensor"))


def test_item4_value_checks_switch_off_and_back_on():
    """The value checks run by default, can be switched off (compiled or hot code), and switch back on."""
    bad = BOXES.clone()
    bad[0, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="gt_boxes must hold finite coordinates"):
        atss_assign(ANCHORS, SIZES, bad, MASK, backend="torch")
    with value_checks(False):
        atss_assign(ANCHORS, SIZES, bad, MASK, backend="cpp" if cpp_available() else "torch")
    with pytest.raises(ValueError, match="gt_boxes must hold finite coordinates"):
        atss_assign(ANCHORS, SIZES, bad, MASK, backend="torch")
    with pytest.raises(TypeError, match="enabled must be a bool"), value_checks(0):
        pass


# ---- item 5: zero images --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_item5_zero_images_give_an_empty_result(backend):
    """Item 5: the torch backend failed with an internal error (stacking nothing); every backend returns
    ``(0, A)`` now."""
    matched, iou = atss_assign(ANCHORS, SIZES, torch.zeros(0, 3, 4), backend=backend)
    assert (matched.shape, matched.dtype, iou.shape, iou.dtype) == ((0, 126), torch.int64, (0, 126), torch.float32)


# ---- item 6: huge topk on the C++ kernel --------------------------------------------------------------

@NEEDS_CPP
def test_item6_huge_topk_allocates_only_what_exists():
    """Item 6: buffers were sized topk * anchors_per_location per level: topk_total = 2**40 died with
    bad_alloc. Per level k = min(topk_total, level size): every anchor is a candidate, as the reference says."""
    starts = torch.tensor([0] + SIZES).cumsum(0)
    got = torch.ops.fiber_kernels_C.atss_assign_fwd(ANCHORS[None], starts, BOXES, MASK, 2**40, True)
    want = atss_assign_reference(ANCHORS, SIZES, BOXES, MASK, topk=10**6)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert int((want[0] >= 0).sum()) > 0
    public = atss_assign(ANCHORS, SIZES, BOXES, MASK, topk=10**9, anchors_per_location=9, backend="cpp")
    assert torch.equal(public[0], want[0])


# ---- item 7: the C++ op checks its arguments ---------------------------------------------------------

LEVEL_STARTS = [
    ([0, 96, 120, 1000], r"level_starts must run from 0 to the anchor count A = 126, got 0 \.\. 1000"),
    ([5, 96, 120, 126], r"level_starts must run from 0 to the anchor count A = 126, got 5 \.\. 126"),
    ([0, 120, 96, 126], "level_starts must be non-decreasing, got 120 before 96"),
]


@NEEDS_CPP
@pytest.mark.parametrize("starts,message", LEVEL_STARTS)
def test_item7_compiled_op_rejects_bad_level_starts(starts, message):
    """Item 7: level_starts past the anchor count segfaulted the process."""
    with pytest.raises(RuntimeError, match=f"atss_assign_fwd: {message}"):
        torch.ops.fiber_kernels_C.atss_assign_fwd(ANCHORS[None], torch.tensor(starts), BOXES, MASK, 9, True)


# ---- item 8: atss_targets rejects what atss_assign rejects -----------------------------------------

@pytest.mark.parametrize("value,message", [
    (float("nan"), "gt_boxes must hold finite coordinates"),
    (-50.0, r"gt_boxes must be xyxy with x2 >= x1 and y2 >= y1, got 1 inverted box"),
])
def test_item8_targets_reject_matched_boxes_assign_would_reject(value, message):
    """Item 8: a NaN or inverted matched box gave NaN targets silently."""
    matched, _ = atss_assign(ANCHORS, SIZES, BOXES, MASK, backend="torch")
    box = int(matched[0][matched[0] >= 0][0])
    bad = BOXES.clone()
    bad[0, box, 2] = value
    with pytest.raises(ValueError, match=message):
        atss_targets(ANCHORS, matched, bad)
    inverted_anchor = ANCHORS.clone()
    inverted_anchor[0, 2] = -100.0
    with pytest.raises(ValueError, match="anchors must be xyxy"):
        atss_targets(inverted_anchor, matched, BOXES)


def test_item8_unmatched_padding_boxes_are_not_read():
    """Padding boxes no anchor is matched to may hold anything, as for atss_assign's masked boxes."""
    matched, _ = atss_assign(ANCHORS, SIZES, BOXES, MASK, backend="torch")
    assert not (matched[1] == 1).any()
    padded = BOXES.clone()
    padded[1, 1] = torch.tensor([float("nan"), 5.0, -3.0, 0.0])
    for got, want in zip(atss_targets(ANCHORS, matched, padded), atss_targets(ANCHORS, matched, BOXES), strict=True):
        assert torch.equal(got, want)


@pytest.fixture(scope="module")
def atss_emu():
    from fiber_kernels.testing import emu

    return emu.build("atss", ["csrc/atss/atss_emu.cpp"])


@pytest.mark.parametrize("starts,message", LEVEL_STARTS)
def test_item7_emulated_cuda_launcher_rejects_bad_level_starts(atss_emu, starts, message):
    """Item 7: the CUDA launcher (under emulation) shares the checks: no kernel reads past the anchors."""
    with pytest.raises(RuntimeError, match=f"atss_assign_fwd: {message}"):
        atss_emu.atss_assign_fwd(ANCHORS[None], torch.tensor(starts), BOXES, MASK, 9, True, seed=0)


def test_item7_emulated_cuda_launcher_rejects_another_device(atss_emu):
    starts = torch.tensor([0] + SIZES).cumsum(0)
    with pytest.raises(RuntimeError, match="atss_assign_fwd: gt_mask must be on cpu"):
        atss_emu.atss_assign_fwd(ANCHORS[None], starts, BOXES, MASK.to("meta"), 9, True, seed=0)
