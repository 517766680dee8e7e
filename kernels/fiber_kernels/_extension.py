"""Loads the optional compiled extension ``fiber_kernels._C`` and answers what it provides.

C++ ops live in the ``fiber_kernels_C`` torch.library namespace. By convention an op ``name``
of fiber_kernels is served by ``torch.ops.fiber_kernels_C.<name>_fwd`` (and ``<name>_bwd``).
The answers are facts of the installation, so ``torch.compile`` takes them as constants
(``assume_constant_result``): backend choice traces into a graph with ``fullgraph=True``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

CPP_NAMESPACE = "fiber_kernels_C"


@functools.cache
def _load() -> tuple[Any, str | None]:
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as error:
        return None, f"{type(error).__name__}: {error}"
    return _C, None


@torch.compiler.assume_constant_result
def is_built() -> bool:
    """True when ``fiber_kernels._C`` imports."""
    return _load()[0] is not None


@torch.compiler.assume_constant_result
def load_error() -> str:
    """Why ``_C`` did not import ("" when it did)."""
    return _load()[1] or ""


def compiled_ops() -> Any:
    """``torch.ops.fiber_kernels_C`` (importing ``_C`` registers its ops): what the ``cuda`` launchers call
    unless given other ops (a test's emulation binding, ``fiber_kernels.testing.emu.launching_on``)."""
    is_built()
    return getattr(torch.ops, CPP_NAMESPACE)


def build_info() -> dict[str, Any]:
    """``{"built": bool, "with_cuda": bool, "cuda_archs": list[str], "error": str}`` of ``_C``."""
    module, error = _load()
    if module is None:
        return {"built": False, "with_cuda": False, "cuda_archs": [], "error": error or ""}
    info = dict(module.build_info())
    archs = [arch for arch in str(info.get("cuda_archs", "")).split(";") if arch]
    return {"built": True, "with_cuda": bool(info.get("with_cuda", False)), "cuda_archs": archs, "error": ""}


@torch.compiler.assume_constant_result
def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``fiber_kernels_C::<op>_fwd`` has a kernel for ``dispatch_key`` ("CPU" or "CUDA")."""
    if not is_built():
        return False
    qualname = f"{CPP_NAMESPACE}::{op}_fwd"
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(qualname, dispatch_key))
    except RuntimeError:
        return False


@functools.cache
def _triton() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return False, f"{type(error).__name__}: {error}"
    return True, ""


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """True when triton imports."""
    return _triton()[0]


@torch.compiler.assume_constant_result
def triton_import_error() -> str:
    """Why triton did not import ("" when it did)."""
    return _triton()[1]
