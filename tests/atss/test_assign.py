"""atss_assign on every backend that runs here (Triton interpreter, C++ CPU kernel) against the
per-image reference: bitwise-equal indices and IoUs on the issue's adversarial cases and random batches."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.atss.dense import atss_assign_dense
from fiber_kernels.atss.reference import atss_assign_reference

from ._cases import FIBER, SMALL, adversarial_cases, pyramid, random_boxes
from .conftest import assert_same

CASES = {case.name: case for case in adversarial_cases()}
BACKENDS = [
    "triton",
    pytest.param("cpp", marks=pytest.mark.skipif(not cpp_available(),
                                                 reason="fiber_kernels._C has no atss_assign CPU kernel")),
]


def run_case(case, convention: str, backend: str) -> None:
    want = atss_assign_reference(case.anchors, case.sizes, case.gt_boxes, case.gt_mask,
                                 anchors_per_location=case.anchors_per_location, convention=convention)
    got = atss_assign(case.anchors, case.sizes, case.gt_boxes, case.gt_mask,
                      anchors_per_location=case.anchors_per_location, convention=convention, backend=backend)
    assert_same(got, want)


@pytest.mark.parametrize("convention", ["glip", "mmdet"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_adversarial_case_matches_reference(name: str, backend: str, convention: str) -> None:
    run_case(CASES[name], convention, backend)


@pytest.mark.parametrize("convention", ["glip", "mmdet"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_batched_torch_matches_reference(name: str, convention: str) -> None:
    case = CASES[name]
    mask = case.gt_mask if case.gt_mask is not None else torch.ones(case.gt_boxes.shape[:2], dtype=torch.bool)
    want = atss_assign_reference(case.anchors, case.sizes, case.gt_boxes, mask,
                                 anchors_per_location=case.anchors_per_location, convention=convention)
    assert_same(atss_assign_dense(case.anchors, case.sizes, case.gt_boxes, mask,
                                  anchors_per_location=case.anchors_per_location, convention=convention), want)


@pytest.mark.parametrize("convention", ["glip", "mmdet"])
def test_triton_random_padded_batch(convention: str) -> None:
    gen = torch.Generator().manual_seed(7)
    anchors, sizes = pyramid(SMALL)
    boxes = random_boxes(3, 5, 96.0, 64.0, gen)
    mask = torch.rand(3, 5, generator=gen) > 0.3
    want = atss_assign_reference(anchors, sizes, boxes, mask, convention=convention)
    assert int((want[0] >= 0).sum()) > 10  # the case exercises real assignments
    assert_same(atss_assign(anchors, sizes, boxes, mask, convention=convention, backend="triton"), want)


@pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel")
@pytest.mark.parametrize("convention", ["glip", "mmdet"])
def test_cpp_full_fiber_pyramid(convention: str) -> None:
    """22400 anchors (800 x 1344, strides 8-128), 2 images with 50 and 17 boxes."""
    gen = torch.Generator().manual_seed(3)
    anchors, sizes = pyramid(FIBER)
    boxes = random_boxes(2, 50, 1344.0, 800.0, gen, max_size=600.0)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 17:] = False
    want = atss_assign_reference(anchors, sizes, boxes, mask, convention=convention)
    assert int((want[0] >= 0).sum()) > 200
    assert_same(atss_assign(anchors, sizes, boxes, mask, convention=convention, backend="cpp"), want)


def test_edge_case_expectations() -> None:
    """Behaviour the reference itself must show, independent of any backend."""
    no_boxes = atss_assign_reference(CASES["no_boxes"].anchors, CASES["no_boxes"].sizes, CASES["no_boxes"].gt_boxes)
    assert bool((no_boxes[0] == -1).all()) and bool((no_boxes[1] == 0).all())
    case = CASES["all_padding"]
    assert bool((atss_assign_reference(case.anchors, case.sizes, case.gt_boxes, case.gt_mask)[0] == -1).all())
    case = CASES["duplicate_boxes"]
    matched, _ = atss_assign_reference(case.anchors, case.sizes, case.gt_boxes)
    assert set(matched[matched >= 0].tolist()) == {0}  # equal IoUs: the first box wins every anchor
    case = CASES["padded_batch"]
    matched, _ = atss_assign_reference(case.anchors, case.sizes, case.gt_boxes, case.gt_mask)
    assert set(matched[1][matched[1] >= 0].tolist()) <= {0, 1} and bool((matched[2] == -1).all())
    case = CASES["zero_area_boxes"]
    matched, _ = atss_assign_reference(case.anchors, case.sizes, case.gt_boxes, convention="mmdet")
    assert set(matched[matched >= 0].tolist()) == {3}  # degenerate boxes fail the centre-inside test


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("convention", ["glip", "mmdet"])
def test_equal_ious_are_all_positive(backend: str, convention: str) -> None:
    """A box covering 9 equal anchors: every candidate IoU is equal, std = 0, threshold = the IoU."""
    anchors, sizes = pyramid([(8, 8, 8.0, 8.0)])
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0]]])
    matched, iou = atss_assign(anchors, sizes, boxes, convention=convention, backend=backend)
    assert int((matched == 0).sum()) == 9
    expected = 81.0 / 65.0 ** 2 if convention == "glip" else 64.0 / 64.0 ** 2
    assert torch.allclose(iou[matched == 0], torch.tensor(expected), rtol=1e-6)


def test_single_candidate_has_no_positive() -> None:
    """One anchor in total: std of one IoU is NaN (torch.std), so nothing is positive, on every backend."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    for backend in ["torch", "triton"] + (["cpp"] if cpp_available() else []):
        matched, _ = atss_assign(anchors, [1], boxes, backend=backend)
        assert matched.tolist() == [[-1]], backend


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("convention", ["glip", "mmdet"])
def test_gpu_backends_full_fiber_pyramid(backend: str, convention: str) -> None:
    """On a GPU: 22400 anchors, batch 4 with 50 padded boxes, against the reference on the CPU."""
    gen = torch.Generator().manual_seed(4)
    anchors, sizes = pyramid(FIBER)
    boxes = random_boxes(4, 50, 1344.0, 800.0, gen, max_size=600.0)
    mask = torch.arange(50)[None, :] < torch.tensor([50, 31, 7, 1])[:, None]
    want = atss_assign_reference(anchors, sizes, boxes, mask, convention=convention)
    got = atss_assign(anchors.cuda(), sizes, boxes.cuda(), mask.cuda(), convention=convention, backend=backend)
    assert_same((got[0].cpu(), got[1].cpu()), want)


def test_auto_backend_order() -> None:
    """CPU tensors go to the C++ kernel when it is built (else the reference); CUDA sm80+ to Triton,
    sm70 to the CUDA kernel (docs/architecture.md); the interpreter is never picked by "auto"."""
    from fiber_kernels import dispatch

    case = CASES["one_box"]
    inputs = dict(anchors=case.anchors, sizes=case.sizes, topk_total=9)
    cpu = dispatch.select_backend("atss_assign", dispatch.DeviceInfo("cpu"), "auto", inputs).name
    assert cpu == ("cpp" if cpp_available() else "torch")
    assert dispatch.auto_order(dispatch.DeviceInfo("cuda", (8, 0)))[0] == "triton"
    assert set(dispatch.registered_ops()["atss_assign"]) == {"triton", "cuda", "cpp", "torch"}


@pytest.mark.skipif(not cpp_available(), reason="fiber_kernels._C has no atss_assign CPU kernel")
def test_compiled_op_has_a_fake_impl() -> None:
    """``fiber_kernels_C::atss_assign_fwd`` traces on fake tensors; opcheck compares fake and real."""
    anchors, sizes = pyramid(SMALL)
    gt_boxes = random_boxes(2, 5, 96.0, 64.0, torch.Generator().manual_seed(3))
    gt_mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    starts = torch.tensor([0] + sizes).cumsum(0)
    args = (anchors[None], starts, gt_boxes, gt_mask, 9, True)
    torch.library.opcheck(torch.ops.fiber_kernels_C.atss_assign_fwd, args,
                          test_utils=("test_schema", "test_faketensor"))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake_args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        matched_gt, matched_iou = torch.ops.fiber_kernels_C.atss_assign_fwd(*fake_args)
    assert matched_gt.shape == matched_iou.shape == (2, anchors.shape[0])
    assert (matched_gt.dtype, matched_iou.dtype) == (torch.int64, torch.float32)
