"""What the public ops do under ``torch.autocast``: one rule for every op family.

``cross_attention``, ``gated_residual_linear`` and ``window_attention`` are matmul ops, so inside an
autocast region for their tensors' device type they run in the region's dtype (bf16 or fp16), like
``torch.matmul`` / ``F.linear``: every floating tensor argument is cast to it before validation, the op
runs on one dtype and returns that dtype, and autograd carries the gradients back through the casts to
the arguments' own dtypes. Exceptions by design: ``alpha`` of ``gated_residual_linear`` is not cast (the
gate is computed in fp32 and its gradient returned in alpha's dtype), and the residual ``x`` *is* cast
(the fused kernel takes one dtype; eager FIBER's ``x + alpha * proj(y)`` promotes to fp32 because alpha
is an fp32 parameter). The ATSS ops take fp32 boxes and are not matmuls: autocast leaves them alone.
The casts happen in Python before dispatch, so the custom ops never see mixed dtypes and need no
Autocast kernel of their own (``torch.library.register_autocast`` takes one fixed dtype, not the region's).
"""

from __future__ import annotations

import torch

AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


def autocast_dtype(value: object) -> torch.dtype | None:
    """The dtype an enabled ``torch.autocast`` region for ``value``'s device type runs in, else None."""
    if not isinstance(value, torch.Tensor) or value.device.type not in AUTOCAST_DEVICE_TYPES:
        return None
    if not torch.is_autocast_enabled(value.device.type):
        return None
    return torch.get_autocast_dtype(value.device.type)


def cast_floats(dtype: torch.dtype | None, *values: object) -> tuple:
    """``values`` with every floating-point tensor cast to ``dtype`` (everything unchanged when None)."""
    if dtype is None:
        return values
    return tuple(v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in values)
