"""The no-GPU evidence toolkit: numerics, ahead-of-time compiles, memory, roofline (docs/architecture.md).

``fiber_kernels.testing.emu`` (host emulation of ``csrc/``, docs/emulation.md) and
``fiber_kernels.testing.csrc_limits`` (the limits headers of ``csrc/``) are separate modules, imported on their own.
"""

from .aot import (
    CARD_LIMITS,
    CardLimits,
    CompileError,
    CompileReport,
    CompileSpec,
    compile_report,
    compile_reports,
    expected_tensor_core_instruction,
    fit_problems,
)
from .memory import fake_cuda, peak_bytes, saved_bytes
from .numerics import assert_close_to_reference
from .nvcc import KernelResources, NoDeviceCodeError, extension_report, nvcc_report, nvcc_unavailable_reason
from .roofline import GPU_SPECS, GpuSpec, count_flops_and_bytes, describe_projection, project_time

__all__ = [
    "CARD_LIMITS",
    "GPU_SPECS",
    "CardLimits",
    "CompileError",
    "CompileReport",
    "CompileSpec",
    "GpuSpec",
    "KernelResources",
    "NoDeviceCodeError",
    "assert_close_to_reference",
    "compile_report",
    "compile_reports",
    "count_flops_and_bytes",
    "describe_projection",
    "expected_tensor_core_instruction",
    "extension_report",
    "fake_cuda",
    "fit_problems",
    "nvcc_report",
    "nvcc_unavailable_reason",
    "peak_bytes",
    "project_time",
    "saved_bytes",
]
