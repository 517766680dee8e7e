"""Backend choice for every fiber_kernels op.

Each op registers its backends here (``register_backend``; ``register_launchers`` for every entry of an
op's launcher table, the backends that run inside its custom op) and asks ``select_backend`` which one
serves a call. A backend answers ``not_supported_reasons``: the generic reasons of its kind (is the
extension built, is the tensor on the right device) plus the op's own (dtype, head dim, ...). The
first backend of the auto order with no reasons wins; an explicitly requested backend that cannot
serve the call raises ``BackendNotSupportedError`` listing every reason.

Auto order: CUDA tensors on sm80+ → triton, cuda, torch; on sm70/sm75 → cuda, torch
(Triton has no Volta tensor-core path); CPU tensors → cpp (a C++ CPU kernel of ``_C``), torch.
``FIBER_KERNELS_BACKEND`` replaces ``"auto"`` globally; a backend named in the call wins over it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _extension

BACKEND_NAMES = ("triton", "cuda", "cpp", "torch")
CUDA_MAX_GRID_Y = 65535  # CUDA's limit on a launch grid's y (and z) dimension
INT32_MAX = 2**31 - 1  # the largest row count a kernel that indexes rows with int32 takes
ENV_VAR = "FIBER_KERNELS_BACKEND"


class BackendNotSupportedError(RuntimeError):
    """The requested backend cannot serve this call; the message lists every reason."""


@dataclass(frozen=True)
class DeviceInfo:
    """Where a call runs: ``type`` "cpu" or "cuda", and the compute capability for CUDA."""

    type: str
    capability: tuple[int, int] | None = None

    @classmethod
    def of(cls, tensor: torch.Tensor) -> DeviceInfo:
        """Describe the device of ``tensor`` (fake and meta CUDA tensors count as CUDA sm80)."""
        device = tensor.device
        if device.type != "cuda":
            return cls(device.type)
        if torch.cuda.is_available():
            return cls("cuda", torch.cuda.get_device_capability(device))
        return cls("cuda", (8, 0))

    def __str__(self) -> str:
        if self.capability is None:
            return self.type
        return f"{self.type} sm{self.capability[0]}{self.capability[1]}"


ReasonsFn = Callable[..., list[str]]


@dataclass(frozen=True)
class BackendLimits:
    """What one backend's kernels take, declared as data next to them (as xformers' operators declare
    ``SUPPORTED_DTYPES`` / ``SUPPORTED_MAX_K``); the backend's dispatch reasons read these values and the
    tests draw their cases from them (``tests/test_limits.py`` also compares them with the C++ constants).

    ``None`` means no limit. ``gpu_*`` narrow ``dtypes`` / ``head_dims`` to what the compiled kernels run
    well on a GPU (the Triton interpreter on the CPU takes every declared value).
    """

    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
    head_dims: tuple[int, ...] | None = None
    max_window_tokens: int | None = None  # tokens of one attention window (Wh * Ww)
    max_grid_y: int | None = None  # a CUDA launch grid's y dimension
    max_rows: int | None = None  # rows the kernels index with int32
    min_capability: tuple[int, int] | None = None  # compute capability on a GPU
    gpu_dtypes: tuple[torch.dtype, ...] | None = None
    gpu_head_dims: tuple[int, ...] | None = None

    def head_dim_reasons(self, head_dim: int, label: str, suffix: str = "") -> list[str]:
        """``[why]`` when ``head_dim`` is not declared (``label`` names it, e.g. "head dim D"), else ``[]``."""
        if self.head_dims is None or head_dim in self.head_dims:
            return []
        return [f"{label} must be one of {self.head_dims}{suffix}, got {head_dim}"]

    def window_reasons(self, tokens: int) -> list[str]:
        """``[why]`` when a window of ``tokens`` tokens exceeds ``max_window_tokens``, else ``[]``."""
        if self.max_window_tokens is None or tokens <= self.max_window_tokens:
            return []
        side = math.isqrt(self.max_window_tokens)
        return [f"window of {tokens} tokens exceeds {self.max_window_tokens} ({side}x{side})"]

    def capability_reasons(self, device: DeviceInfo) -> list[str]:
        """``[why]`` for a GPU below ``min_capability`` (the Triton kernels need tensor cores), else ``[]``."""
        if device.type != "cuda" or device.capability is None or self.min_capability is None:
            return []
        if device.capability >= self.min_capability:
            return []
        wanted = "".join(map(str, self.min_capability))
        return [f"Triton has no tensor-core path below sm{wanted}, got sm{device.capability[0]}{device.capability[1]}"]


@dataclass
class Backend:
    """One implementation of one op: ``impl`` runs it, ``reasons(device, **inputs)`` says why it can't,
    ``limits`` what its kernels take (the data ``reasons`` reads; None for a backend without limits)."""

    op: str
    name: str
    impl: Callable[..., Any]
    reasons: ReasonsFn | None = None
    limits: BackendLimits | None = None

    def not_supported_reasons(self, device: DeviceInfo, inputs: Mapping[str, Any] | None = None) -> list[str]:
        """Every reason this backend cannot serve a call on ``device`` with ``inputs`` (empty: it can)."""
        found = list(GENERIC_REASONS[self.name](self.op, device))
        if self.reasons is not None and inputs is not None:
            found += self.reasons(device, **inputs)
        return found


@dataclass
class _Registry:
    ops: dict[str, dict[str, Backend]] = field(default_factory=dict)


_REGISTRY = _Registry()


def register_backend(op: str, name: str, impl: Callable[..., Any], reasons: ReasonsFn | None = None,
                     limits: BackendLimits | None = None) -> Backend:
    """Register ``impl`` as backend ``name`` of ``op``; ``reasons(device, **inputs) -> list[str]``; ``limits``
    the declared limits of its kernels."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend name must be one of {BACKEND_NAMES}, got {name!r}")
    backend = Backend(op, name, impl, reasons, limits)
    _REGISTRY.ops.setdefault(op, {})[name] = backend
    return backend


@dataclass(frozen=True)
class Launchers:
    """A backend that runs inside an op's ``torch.library`` custom op (autograd and fake implementation shared):
    its ``forward`` and ``backward`` launchers (plain functions, the contract of the op's launcher table),
    ``limits`` what its kernels take and ``reasons(device, **inputs) -> list[str]`` why they cannot take a call
    (reading ``limits``; None when the generic reasons are all). An op's launcher table maps backend names to
    these; :func:`register_launchers` registers every entry."""

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    limits: BackendLimits
    reasons: ReasonsFn | None = None


def register_launchers(op: str, table: Mapping[str, Launchers], impl: Callable[[str], Callable[..., Any]]) -> None:
    """Register every backend of ``op``'s launcher table: backend ``name`` runs ``impl(name)`` (the op's custom op
    with that launcher) and answers with the table entry's reasons and limits."""
    for name, launchers in table.items():
        register_backend(op, name, impl(name), launchers.reasons, launchers.limits)


def registered_ops() -> dict[str, dict[str, Backend]]:
    """Every registered op and its backends, by name."""
    return {op: dict(backends) for op, backends in _REGISTRY.ops.items()}


def auto_order(device: DeviceInfo) -> tuple[str, ...]:
    """Backends that ``"auto"`` tries, in order, for ``device``."""
    if device.type == "cuda":
        if device.capability is not None and device.capability >= (8, 0):
            return ("triton", "cuda", "torch")
        return ("cuda", "torch")
    return ("cpp", "torch")


def resolve_requested(backend: str) -> str:
    """Apply ``FIBER_KERNELS_BACKEND`` to a call's ``backend`` argument and validate the name."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {('auto',) + BACKEND_NAMES}, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto") or "auto"
        if backend != "auto" and backend not in BACKEND_NAMES:
            raise ValueError(f"{ENV_VAR} must be one of {('auto',) + BACKEND_NAMES}, got {backend!r}")
    elif backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {('auto',) + BACKEND_NAMES}, got {backend!r}")
    return backend


def select_backend(op: str, device: DeviceInfo, backend: str = "auto",
                   inputs: Mapping[str, Any] | None = None) -> Backend:
    """Return the backend of ``op`` that serves a call on ``device`` with ``inputs``.

    Raises ``BackendNotSupportedError`` naming every reason when the requested backend (or, for
    "auto", every backend of the auto order) cannot serve the call.
    """
    if op not in _REGISTRY.ops:
        raise ValueError(f"unknown op {op!r}; registered ops: {sorted(_REGISTRY.ops)}")
    backends = _REGISTRY.ops[op]
    requested = resolve_requested(backend)
    candidates = auto_order(device) if requested == "auto" else (requested,)
    all_reasons: list[str] = []
    for name in candidates:
        if name not in backends:
            all_reasons.append(f"{name}: {op} has no {name} backend")
            continue
        reasons = backends[name].not_supported_reasons(device, inputs)
        if not reasons:
            return backends[name]
        all_reasons += [f"{name}: {reason}" for reason in reasons]
    label = "auto" if requested == "auto" else repr(requested)
    raise BackendNotSupportedError(
        f"{op}: no backend can serve this call on {device} (requested {label}):\n  - " + "\n  - ".join(all_reasons))


def _triton_reasons(op: str, device: DeviceInfo) -> list[str]:
    reasons = []
    if not _extension.triton_available():
        reasons.append(f"triton is not importable ({_extension.triton_import_error()})")
    if device.type == "cpu" and not interpreter_on():
        reasons.append("tensors are on the CPU and TRITON_INTERPRET=1 is not set")
    elif device.type not in ("cpu", "cuda"):
        reasons.append(f"device type {device.type!r} is not supported (cuda, or cpu under TRITON_INTERPRET=1)")
    if device.type == "cuda" and device.capability is not None and device.capability < (7, 0):
        reasons.append(f"compute capability {device.capability} is below sm70")
    return reasons


def interpreter_on() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels run in its Python interpreter (CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_dtype_reasons(device: DeviceInfo, dtype: torch.dtype) -> list[str]:
    """Dtype limits every Triton backend shares: under ``TRITON_INTERPRET=1`` bf16 is declined wherever the
    interpreter would run the kernels (CPU tensors, or CUDA tensors on a machine with a GPU), since its bf16
    ``tl.dot`` returns wrong results (an upstream Triton interpreter bug). Fake CUDA tensors on a machine
    without a GPU (shape propagation, compile tests) run nothing and are not declined."""
    runs_here = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_available())
    if dtype == torch.bfloat16 and interpreter_on() and runs_here:
        return ["bfloat16 under TRITON_INTERPRET=1: the Triton interpreter's bf16 tl.dot returns wrong results "
                "(upstream bug); use float16/float32 there, or another backend"]
    return []


def _compiled_reasons(op: str, device: DeviceInfo, expected_device: str) -> list[str]:
    reasons = []
    if device.type != expected_device:
        reasons.append(f"tensors are on {device.type}, this backend needs {expected_device} tensors")
    if not _extension.is_built():
        reasons.append(f"fiber_kernels._C is not built ({_extension.load_error()})")
    elif not _extension.has_kernel(op, "CUDA" if expected_device == "cuda" else "CPU"):
        reasons.append(f"fiber_kernels._C has no {expected_device} kernel for {op}")
    return reasons


GENERIC_REASONS: dict[str, Callable[[str, DeviceInfo], list[str]]] = {
    "triton": _triton_reasons,
    "cuda": lambda op, device: _compiled_reasons(op, device, "cuda"),
    "cpp": lambda op, device: _compiled_reasons(op, device, "cpu"),
    "torch": lambda op, device: [],
}


def pick_launcher(op: str, launchers: Mapping[str, Launchers], name: object) -> Launchers:
    """``launchers[name]``: an op's launcher table (backend name -> :class:`Launchers`) refuses any other name with
    a ``ValueError`` naming the known ones (a typo must not fall through to some default backend)."""
    if not isinstance(name, str) or name not in launchers:
        raise ValueError(f"{op}: backend must be one of {tuple(launchers)}, got {name!r}")
    return launchers[name]
