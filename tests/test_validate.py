"""Argument checks: each failure names the argument and what was expected."""

import pytest
import torch
from fiber_kernels import _validate as v


def test_check_tensor_accepts_and_returns() -> None:
    x = torch.zeros(2, 3)
    assert v.check_tensor("x", x, ndim=2, dtypes=v.FLOAT_DTYPES) is x
    assert v.check_tensor("x", x, ndim=(2, 3)) is x


def test_check_tensor_messages() -> None:
    with pytest.raises(TypeError, match=r"q must be a torch.Tensor \(B, H, N, D\), got list"):
        v.check_tensor("q", [1, 2], shape_doc="(B, H, N, D)")
    with pytest.raises(ValueError, match=r"q must be 4-D \(B, H, N, D\), got shape \(2, 3\)"):
        v.check_tensor("q", torch.zeros(2, 3), ndim=4, shape_doc="(B, H, N, D)")
    with pytest.raises(ValueError, match=r"anchors must be 2-D or 3-D, got shape \(4,\)"):
        v.check_tensor("anchors", torch.zeros(4), ndim=(2, 3))
    with pytest.raises(TypeError, match=r"mask must have dtype in \(bool\), got torch.float32"):
        v.check_tensor("mask", torch.zeros(2), dtypes=(torch.bool,))
    with pytest.raises(ValueError, match=r"k must not be empty, got shape \(0, 4\)"):
        v.check_tensor("k", torch.zeros(0, 4))
    assert v.check_tensor("k", torch.zeros(0, 4), allow_empty=True).shape == (0, 4)


def test_same_device_and_dtype() -> None:
    a, b = torch.zeros(1), torch.zeros(1, dtype=torch.float16)
    assert v.check_same_device(a=a, b=b, c=None) == torch.device("cpu")
    assert v.check_same_dtype(a=a, c=None, d=torch.ones(2)) == torch.float32
    with pytest.raises(TypeError, match="all tensors must have one dtype, got a is torch.float32, b is torch.float16"):
        v.check_same_dtype(a=a, b=b)
    with pytest.raises(ValueError, match="all tensors must be on one device, got a on cpu, m on meta"):
        v.check_same_device(a=a, m=torch.zeros(1, device="meta"))


def test_choice_and_positive_int() -> None:
    v.check_choice("gate", "tanh", ("identity", "tanh"))
    with pytest.raises(ValueError, match=r"gate must be one of \('identity', 'tanh'\), got 'relu'"):
        v.check_choice("gate", "relu", ("identity", "tanh"))
    assert v.check_positive_int("topk", 9) == 9
    with pytest.raises(ValueError, match="topk must be an int >= 1, got 0"):
        v.check_positive_int("topk", 0)
    with pytest.raises(TypeError, match="window_size must be an int >= 1, got bool"):
        v.check_positive_int("window_size", True)
    with pytest.raises(TypeError, match="shift_size must be an int >= 0, got float"):
        v.check_positive_int("shift_size", 1.0, minimum=0)


def test_check_scale() -> None:
    assert v.check_scale(None, 64) == 0.125
    assert v.check_scale(2, 64) == 2.0 and isinstance(v.check_scale(2, 64), float)
    assert v.check_scale(0.5) == 0.5
    with pytest.raises(TypeError, match="scale must be a float, got NoneType"):
        v.check_scale(None)
    with pytest.raises(TypeError, match="scale must be a float or None, got bool"):
        v.check_scale(True, 64)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"scale must be a finite float > 0 or None, got"):
            v.check_scale(bad, 64)
    with pytest.raises(ValueError, match=r"softmax_scale must be a finite float > 0, got 0"):
        v.check_scale(0, name="softmax_scale")
