"""Backend limits are data (``dispatch.BackendLimits``, declared next to each kernel): every backend of the
attention ops declares them, the dispatch reasons follow them at their edges, and the limits that the C++
launchers check too are the same numbers on both sides (``csrc/<op>/<op>_limits.h`` as
``fiber_kernels.testing.csrc_limits`` reads it; the Python side is stated once, in the backend's ``LIMITS``)."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels import dispatch
from fiber_kernels._validate import FLOAT_DTYPES
from fiber_kernels.cross_attention import cuda as cross_cuda
from fiber_kernels.cross_attention import triton_attention
from fiber_kernels.testing.csrc_limits import read_limits
from fiber_kernels.window_attention import cuda as window_cuda
from fiber_kernels.window_attention import triton_common
from fiber_kernels.window_attention.geometry import WindowGeometry

OPS = ("cross_attention", "gated_residual_linear", "window_attention")
SM80 = dispatch.DeviceInfo("cuda", (8, 0))


def test_window_cuda_limits_are_the_cpp_limits() -> None:
    cpp = read_limits("window_attention")
    assert window_cuda.LIMITS.head_dims == cpp["kHeadDims"]
    assert window_cuda.LIMITS.max_window_tokens == cpp["kMaxTokens"]


def test_cross_cuda_limits_are_the_cpp_limits() -> None:
    cpp = read_limits("cross_attention")
    assert cross_cuda.LIMITS.head_dims == cpp["kHeadDims"]
    assert cross_cuda.LIMITS.max_grid_y == cpp["kMaxGridY"]
    assert cross_cuda.LIMITS.max_rows == cpp["kMaxRows"]


def test_every_backend_of_the_attention_ops_declares_its_limits() -> None:
    registered = dispatch.registered_ops()
    for op in OPS:
        for name, backend in registered[op].items():
            assert isinstance(backend.limits, dispatch.BackendLimits), (op, name)
            assert backend.limits.dtypes == FLOAT_DTYPES, (op, name)  # what the public op's checks accept


def _window_reasons(backend: str, device: dispatch.DeviceInfo, head_dim: int, window: int,
                    dtype: torch.dtype = torch.float16) -> list[str]:
    qkv = torch.empty(1, window, window, 3 * head_dim, dtype=dtype, device="meta")
    geometry = WindowGeometry.of(qkv.shape, 1, (window, window), (0, 0), head_dim ** -0.5, -100.0, False)
    return dispatch.registered_ops()["window_attention"][backend].reasons(device, qkv=qkv, geometry=geometry)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_window_reasons_follow_the_declared_head_dims_and_window_maximum(backend: str) -> None:
    limits = dispatch.registered_ops()["window_attention"][backend].limits
    cpu = dispatch.DeviceInfo("cpu")
    largest = int(limits.max_window_tokens ** 0.5)
    assert largest * largest == limits.max_window_tokens
    for head_dim in limits.head_dims:
        assert _window_reasons(backend, cpu, head_dim, largest) == [], head_dim
    undeclared = max(limits.head_dims) * 2
    assert any(str(undeclared) in reason for reason in _window_reasons(backend, cpu, undeclared, 7))
    too_many = _window_reasons(backend, cpu, limits.head_dims[0], largest + 1)
    assert too_many == [f"window of {(largest + 1) ** 2} tokens exceeds {limits.max_window_tokens} "
                        f"({largest}x{largest})"]


def test_window_triton_gpu_reasons_follow_the_declared_gpu_limits() -> None:
    limits = triton_common.LIMITS
    for head_dim in limits.head_dims:
        for dtype in FLOAT_DTYPES:
            declined = _window_reasons("triton", SM80, head_dim, 7, dtype)
            assert (declined == []) == (head_dim in limits.gpu_head_dims and dtype in limits.gpu_dtypes)
    below = dispatch.DeviceInfo("cuda", (limits.min_capability[0] - 1, 5))
    assert _window_reasons("triton", below, limits.gpu_head_dims[0], 7, limits.gpu_dtypes[0]) == [
        "Triton has no tensor-core path below sm80, got sm75"]


def _cross_reasons(backend: str, device: dispatch.DeviceInfo, batch: int, heads: int, head_dim: int,
                   key_batches: int | None = None) -> list[str]:
    q = torch.empty(batch, heads, 1, head_dim, dtype=torch.float16, device="meta")
    k = torch.empty(key_batches or batch, heads, 1, head_dim, dtype=torch.float16, device="meta")
    return dispatch.registered_ops()["cross_attention"][backend].reasons(device, q=q, k=k)


@pytest.mark.parametrize("backend, limits", [("triton", triton_attention.LIMITS), ("cuda", cross_cuda.LIMITS)])
def test_cross_reasons_follow_the_declared_head_dims_and_grid(backend: str, limits: dispatch.BackendLimits) -> None:
    assert dispatch.registered_ops()["cross_attention"][backend].limits is limits
    for head_dim in limits.head_dims:
        assert _cross_reasons(backend, SM80, 1, 1, head_dim) == [], head_dim
    assert any("got 16" in reason for reason in _cross_reasons(backend, SM80, 1, 1, 16))
    assert _cross_reasons(backend, SM80, limits.max_grid_y, 1, limits.head_dims[0]) == []
    over = _cross_reasons(backend, SM80, limits.max_grid_y + 1, 1, limits.head_dims[0])
    assert len(over) == 1 and f"<= {limits.max_grid_y}" in over[0]


def test_cross_cuda_reasons_follow_the_declared_row_maximum() -> None:
    rows = cross_cuda.LIMITS.max_rows
    assert cross_cuda.unsupported_shape_reasons((1, 1, rows, 32), (1, 1, 1, 32)) == []
    over = cross_cuda.unsupported_shape_reasons((1, 1, rows + 1, 32), (1, 1, 1, 32))
    assert len(over) == 1 and f"<= {rows}" in over[0]
