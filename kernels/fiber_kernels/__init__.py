"""fiber_kernels: fused Triton and CUDA kernels for vision-language pre-training.

Each op has one functional entry point with a ``backend="auto"|"triton"|"cuda"|"cpp"|"torch"``
argument (see ``fiber_kernels.dispatch``); ``python -m fiber_kernels.info`` shows what this
machine can run. Value checks (finite boxes, index ranges) can be switched off with
``value_checks(False)``; they never run on fake/meta tensors or under ``torch.compile`` tracing.
"""

from ._validate import reads_values, value_checks
from .atss import atss_assign, atss_targets
from .cross_attention import cross_attention, gated_residual_linear
from .dispatch import BackendNotSupportedError
from .window_attention import window_attention

__version__ = "0.1.0"

__all__ = ["BackendNotSupportedError", "__version__", "atss_assign", "atss_targets", "cross_attention",
           "gated_residual_linear", "reads_values", "value_checks", "window_attention"]
