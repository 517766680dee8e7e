"""Argument checks shared by every public op: each failure names the argument and what was expected.

Shapes, dtypes and devices are metadata and always checked. Checks that read tensor *values* (finite
boxes, index ranges) run only where values exist and reading them is allowed (``reads_values``): not
on fake or meta tensors, not while ``torch.compile`` traces, and not inside ``value_checks(False)``
(compiled or hot code that guarantees its inputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch._subclasses.fake_tensor import is_fake

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(dtype).replace("torch.", "") for dtype in dtypes)


def check_tensor(name: str, value: object, *, ndim: int | Sequence[int] | None = None,
                 dtypes: Sequence[torch.dtype] | None = None, shape_doc: str = "",
                 allow_empty: bool = False) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given rank(s) and dtype(s); return it.

    ``shape_doc`` (e.g. "(B, H, Nq, D)") is quoted in the error so the caller sees the expected form.
    Raises ``TypeError`` for a non-tensor or wrong dtype and ``ValueError`` for a wrong rank or an
    empty tensor (unless ``allow_empty``).
    """
    expected = f" {shape_doc}" if shape_doc else ""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{expected}, got {type(value).__name__}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in ranks:
            wanted = " or ".join(f"{rank}-D" for rank in ranks)
            raise ValueError(f"{name} must be {wanted}{expected}, got shape {tuple(value.shape)}")
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in ({_dtype_names(dtypes)}), got {value.dtype}")
    if not allow_empty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty{expected}, got shape {tuple(value.shape)}")
    return value


def _one_value(attribute: str, requirement: str, joiner: str, error: type[Exception],
               tensors: dict[str, torch.Tensor | None]) -> object:
    """The ``attribute`` (``"device"``, ``"dtype"``) that every given tensor (None skipped) shares; otherwise
    ``error("all tensors must {requirement}, got {name}{joiner}{value}, ...")`` listing each tensor's."""
    values = {name: getattr(t, attribute) for name, t in tensors.items() if t is not None}
    if len(set(values.values())) > 1:
        listing = ", ".join(f"{name}{joiner}{value}" for name, value in values.items())
        raise error(f"all tensors must {requirement}, got {listing}")
    return next(iter(values.values()))


def check_same_device(**tensors: torch.Tensor | None) -> torch.device:
    """Check that every given tensor (None skipped) is on one device; return that device."""
    return _one_value("device", "be on one device", " on ", ValueError, tensors)


def check_same_dtype(**tensors: torch.Tensor | None) -> torch.dtype:
    """Check that every given tensor (None skipped) has one dtype; return that dtype."""
    return _one_value("dtype", "have one dtype", " is ", TypeError, tensors)


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Check that ``value`` is an int (not bool) >= ``minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_scale(value: object, head_dim: int | None = None, *, name: str = "scale") -> float:
    """Check an attention softmax scale: a finite float > 0; ``None`` means ``head_dim ** -0.5`` when a
    ``head_dim`` is given (the public ops) and is an error otherwise (the launchers). Returns a float."""
    if value is None and head_dim is not None:
        return head_dim ** -0.5
    allowed = " or None" if head_dim is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float{allowed}, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0{allowed}, got {value!r}")
    return float(value)


_VALUE_CHECKS = {"enabled": True}


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the checks that read tensor values (each one a device-to-host sync) on or off inside the block."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous = _VALUE_CHECKS["enabled"]
    _VALUE_CHECKS["enabled"] = enabled
    try:
        yield
    finally:
        _VALUE_CHECKS["enabled"] = previous


def reads_values(*tensors: torch.Tensor | None) -> bool:
    """True when value checks may read ``tensors``: the switch is on, ``torch.compile`` is not tracing, and
    none is a fake or meta tensor (those carry shapes, not values)."""
    if not _VALUE_CHECKS["enabled"] or torch.compiler.is_compiling():
        return False
    return not any(t is not None and (t.device.type == "meta" or is_fake(t)) for t in tensors)
