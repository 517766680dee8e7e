"""Roofline projection of GPU time from counted FLOPs and HBM bytes. Every figure is *projected*.

``project_time`` is ``max(flops / peak_flops, bytes / bandwidth)``: a lower bound that assumes
perfect overlap and peak throughput. ``count_flops_and_bytes`` counts an eager function op by op:
FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; it gives
elementwise ops 0 FLOPs), bytes as the sum over aten ops of the sizes of their tensor inputs and
outputs, i.e. eager PyTorch reading and writing every intermediate from HBM once per op (view ops
and ops that return no tensor move nothing and count 0; custom ops count their inputs and outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .memory import _check_fn, _fake_mode, _needs_python_engine, _python_backward, _tensors


@dataclass(frozen=True)
class GpuSpec:
    """Dense peak throughput (FLOP/s, no sparsity) and HBM bandwidth (bytes/s) of one GPU, with its source.

    ``fp32_flops`` is the CUDA-core FP32 peak (no TF32 tensor cores); ``bf16_tensor_flops`` is None
    where the card has no bf16 tensor cores.
    """

    name: str
    fp16_tensor_flops: float
    bf16_tensor_flops: float | None
    fp32_flops: float
    hbm_bytes_per_s: float
    source: str


GPU_SPECS: dict[str, GpuSpec] = {
    # NVIDIA Tesla V100 datasheet (V100 SXM2): FP32 15.7 TFLOPS, Tensor Performance 125 TFLOPS,
    # HBM2 900 GB/s (32 GB). No bf16.
    "V100": GpuSpec("V100-SXM2-32GB", 125e12, None, 15.7e12, 900e9,
                    "NVIDIA Tesla V100 datasheet, SXM2 column: 125 TFLOPS tensor, 15.7 TFLOPS FP32, 900 GB/s"),
    # NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM): BF16/FP16 Tensor Core 312 TFLOPS (624 with
    # sparsity), FP32 19.5 TFLOPS, GPU memory bandwidth 2,039 GB/s.
    "A100": GpuSpec("A100-SXM4-80GB", 312e12, 312e12, 19.5e12, 2039e9,
                    "NVIDIA A100 datasheet, 80GB SXM column: 312 TFLOPS fp16/bf16 tensor, 19.5 TFLOPS FP32, "
                    "2,039 GB/s"),
    # NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): BF16/FP16 Tensor Core 1,979 TFLOPS *with sparsity*
    # (989.5 dense), FP32 67 TFLOPS, GPU memory bandwidth 3.35 TB/s.
    "H100": GpuSpec("H100-SXM5-80GB", 989.5e12, 989.5e12, 67e12, 3.35e12,
                    "NVIDIA H100 datasheet, SXM column: 1,979 TFLOPS fp16/bf16 tensor with sparsity (989.5 dense), "
                    "67 TFLOPS FP32, 3.35 TB/s"),
}

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_projection_args(flops: object, bytes_moved: object, gpu: object, dtype: object) -> GpuSpec:
    for name, value in (("flops", flops), ("bytes_moved", bytes_moved)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not 0 <= value < float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if gpu not in GPU_SPECS:
        raise ValueError(f"gpu must be one of {tuple(GPU_SPECS)}, got {gpu!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of (float16, bfloat16, float32), got {dtype}")
    spec = GPU_SPECS[gpu]
    if dtype == torch.bfloat16 and spec.bf16_tensor_flops is None:
        raise ValueError(f"dtype bfloat16 has no tensor-core peak on {gpu} ({spec.name} has no bf16 tensor cores)")
    return spec


def _peak_flops(spec: GpuSpec, dtype: torch.dtype) -> float:
    if dtype == torch.float16:
        return spec.fp16_tensor_flops
    if dtype == torch.bfloat16:
        return spec.bf16_tensor_flops  # type: ignore[return-value]
    return spec.fp32_flops


def project_time(flops: float, bytes_moved: float, gpu: str, dtype: torch.dtype) -> float:
    """Projected seconds on ``gpu`` ("V100", "A100", "H100"): ``max(flops / peak, bytes / bandwidth)``.

    ``dtype`` picks the peak: fp16/bf16 tensor cores, or FP32 CUDA cores for float32.
    """
    spec = _check_projection_args(flops, bytes_moved, gpu, dtype)
    return max(flops / _peak_flops(spec, dtype), bytes_moved / spec.hbm_bytes_per_s)


def describe_projection(flops: float, bytes_moved: float, gpu: str, dtype: torch.dtype) -> str:
    """One line such as ``projected A100-SXM4-80GB float16: 1.234 ms (memory-bound; ...)``."""
    spec = _check_projection_args(flops, bytes_moved, gpu, dtype)
    compute = flops / _peak_flops(spec, dtype)
    memory = bytes_moved / spec.hbm_bytes_per_s
    bound = "memory-bound" if memory >= compute else "compute-bound"
    return (f"projected {spec.name} {str(dtype).replace('torch.', '')}: {max(compute, memory) * 1e3:.4g} ms "
            f"({bound}; projected compute {compute * 1e3:.4g} ms for {flops:.4g} FLOP, projected memory "
            f"{memory * 1e3:.4g} ms for {bytes_moved:.4g} B)")


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class _BytesMoved(TorchDispatchMode):
    """Sums the bytes of every tensor input and output of every aten op except views."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = _tensors(out)
        is_view = any(ret.alias_info is not None and not ret.alias_info.is_write for ret in func._schema.returns)
        if outputs and not is_view:  # metadata queries such as prim.device return no tensor and move nothing
            inputs = _tensors(pytree.tree_leaves((args, kwargs or {})))
            self.total += sum(_nbytes(t) for t in inputs) + sum(_nbytes(t) for t in outputs)
        return out


def count_flops_and_bytes(fn: Callable[..., Any], *inputs: Any, backward: bool = False) -> tuple[int, int]:
    """``(flops, bytes)`` of ``fn(*inputs)`` run eagerly, op by op (see the module docstring).

    Args:
        fn: the function; with ``backward=True`` its floating outputs that require grad are also
            back-propagated with gradients of ones, and the backward ops are counted too.
        inputs: CPU tensors, or fake CUDA tensors (``fake_cuda``) to count real shapes for free.
    Returns:
        FLOPs (multiply-add = 2) and bytes read + written, as ints.
    """
    tensors = _check_fn(fn, inputs)
    if not isinstance(backward, bool):
        raise TypeError(f"backward must be a bool, got {type(backward).__name__}")
    flop_counter = FlopCounterMode(display=False)
    bytes_moved = _BytesMoved()
    leaves = [t for t in tensors if t.requires_grad and t.is_leaf]
    old_grads = [t.grad for t in leaves]
    try:
        _count(fn, inputs, tensors, backward, flop_counter, bytes_moved)
    finally:
        for leaf, grad in zip(leaves, old_grads, strict=True):
            leaf.grad = grad
    return int(flop_counter.get_total_flops()), int(bytes_moved.total)


def _count(fn: Callable[..., Any], inputs: tuple[Any, ...], tensors: list[torch.Tensor], backward: bool,
           flop_counter: FlopCounterMode, bytes_moved: _BytesMoved) -> None:
    with ExitStack() as stack:
        mode = _fake_mode(tensors)
        if mode is not None:
            stack.enter_context(mode)
        stack.enter_context(torch.enable_grad() if backward else torch.no_grad())
        stack.enter_context(flop_counter)
        stack.enter_context(bytes_moved)
        outputs = _tensors(fn(*inputs))
        if backward:
            outputs = [o for o in outputs if o.requires_grad and o.is_floating_point()]
            if not outputs:
                raise ValueError("with backward=True, fn must return a floating-point tensor that requires grad")
            seeds = [torch.ones_like(o) for o in outputs]
            if _needs_python_engine(tensors):  # fake CUDA without a driver (see memory.py)
                with torch.no_grad():
                    _python_backward(outputs, seeds, [])
            else:
                torch.autograd.backward(outputs, seeds)
