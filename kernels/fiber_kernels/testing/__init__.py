"""The no-GPU evidence toolkit (DESIGN §5): numerics, ahead-of-time compiles, memory, roofline.

``fiber_kernels.testing.emu`` (host emulation of ``csrc/``) is a separate module, imported on its own.
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
