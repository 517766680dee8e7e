"""assert_close_to_reference: the flash-attention tolerance rule and its failure message."""

import re

import pytest
import torch
from fiber_kernels.testing import assert_close_to_reference


def _softmax_case() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(4, 33, 57)
    return torch.softmax(x.double(), -1).float(), torch.softmax(x.half(), -1)


def test_passes_a_good_fp16_result() -> None:
    ref, torch_fp16 = _softmax_case()
    # A "kernel" that computes in fp32 and rounds once is at least as good as PyTorch's fp16 softmax.
    kernel = ref.half()
    assert_close_to_reference(kernel, ref, torch_fp16, name="softmax")


def test_fails_a_perturbed_result_and_says_where() -> None:
    ref, torch_fp16 = _softmax_case()
    kernel = ref.half().clone()
    torch_error = (torch_fp16.double() - ref.double()).abs().max().item()
    kernel[1, 2, 3] += 10 * torch_error
    kernel[3, 0, 5] -= 20 * torch_error
    with pytest.raises(AssertionError) as info:
        assert_close_to_reference(kernel, ref, torch_fp16, name="softmax")
    message = str(info.value)
    assert message.startswith("softmax: 2 of 7524 elements exceed the bound")
    assert "(1, 2, 3)" in message and "(3, 0, 5)" in message
    assert re.search(r"worst at \(3, 0, 5\)", message)
    assert f"max |torch - ref| = {torch_error:.3e}" in message


def test_factor_decides() -> None:
    ref, torch_fp16 = _softmax_case()
    torch_error = (torch_fp16.double() - ref.double()).abs().max().item()
    kernel = ref.half().clone()
    kernel[0, 0, 0] = (ref[0, 0, 0].double() + 2.5 * torch_error).half()
    assert_close_to_reference(kernel, ref, torch_fp16, factor=3.0, atol_floor=0.0)
    with pytest.raises(AssertionError, match="1 of 7524 elements"):
        assert_close_to_reference(kernel, ref, torch_fp16, factor=2.0, atol_floor=0.0)


def test_nan_where_reference_is_finite_fails() -> None:
    ref, torch_fp16 = _softmax_case()
    kernel = ref.half().clone()
    kernel[2, 1, 0] = float("nan")
    with pytest.raises(AssertionError, match=r"(?s)1 of 7524.*\(2, 1, 0\): out=nan"):
        assert_close_to_reference(kernel, ref, torch_fp16)


def test_inf_must_match_reference_inf() -> None:
    ref = torch.tensor([1.0, float("inf"), float("-inf"), float("nan")])
    assert_close_to_reference(ref.half(), ref, ref.half())
    with pytest.raises(AssertionError, match="1 of 4"):
        assert_close_to_reference(torch.tensor([1.0, float("-inf"), float("-inf"), float("nan")]).half(), ref,
                                  ref.half())


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"out": [1.0]}, TypeError, "out must be a torch.Tensor"),
    ({"ref_fp32": None}, TypeError, "ref_fp32 must be a torch.Tensor"),
    ({"out_torch_same_dtype": 3}, TypeError, "out_torch_same_dtype must be a torch.Tensor"),
    ({"out": torch.zeros(3, 4)}, ValueError, r"x: out, ref_fp32 and out_torch_same_dtype must have one shape.*"
                                            r"out \(3, 4\)"),
    ({"out": torch.zeros(4, 3, dtype=torch.int32)}, TypeError, "out must be a floating-point tensor"),
    ({"factor": 0.5}, ValueError, "factor must be a finite number >= 1"),
    ({"factor": "3"}, TypeError, "factor must be a real number"),
    ({"atol_floor": -1.0}, ValueError, "atol_floor must be a finite number >= 0"),
    ({"name": 1}, TypeError, "name must be a str"),
])
def test_bad_arguments(kwargs: dict, error: type, pattern: str) -> None:
    args = {"out": torch.zeros(4, 3), "ref_fp32": torch.zeros(4, 3), "out_torch_same_dtype": torch.zeros(4, 3),
            "name": "x"}
    args.update(kwargs)
    out, ref, same = args.pop("out"), args.pop("ref_fp32"), args.pop("out_torch_same_dtype")
    with pytest.raises(error, match=pattern):
        assert_close_to_reference(out, ref, same, **args)
