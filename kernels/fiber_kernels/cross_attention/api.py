"""Public entry points ``cross_attention`` and ``gated_residual_linear``: validation, dispatch, docs.

Backends (``fiber_kernels.dispatch``): every entry of ``function.py``'s launcher tables, registered from the
table with its limits and reasons: ``triton`` (the custom ops of ``function.py``; CUDA sm80+, or CPU tensors
under ``TRITON_INTERPRET=1`` when asked for by name) and ``cuda`` (the same custom ops launching the ``csrc/``
kernels through ``cuda.py``; declines while ``fiber_kernels._C`` is not built); and ``torch`` (PyTorch
composite ops). Shape limits of a backend are reasons, so ``"auto"`` moves on.
"""

from __future__ import annotations

import torch

from .. import dispatch
from .._autocast import autocast_dtype, cast_floats
from .._validate import FLOAT_DTYPES, check_choice, check_same_device, check_same_dtype, check_scale, check_tensor
from .checks import check_cross_attention
from .composite import cross_attention_composite
from .function import ATTENTION_LAUNCHERS, LINEAR_LAUNCHERS, cross_attention_op, gated_residual_linear_op
from .reference import GATES, gated_residual_linear_reference


def _attention(launcher: str):
    """The ``launcher`` backend: the custom op running that launcher, returning ``out``."""
    def impl(q, k, v, key_padding_mask, scale):
        return cross_attention_op(q, k, v, key_padding_mask, scale, launcher)[0]

    return impl


dispatch.register_launchers("cross_attention", ATTENTION_LAUNCHERS, _attention)
dispatch.register_backend("cross_attention", "torch", cross_attention_composite, limits=dispatch.BackendLimits())


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                    scale: float | None = None, *, backend: str = "auto") -> torch.Tensor:
    """FIBER's cross-attention with query groups sharing keys: ``softmax(q kᵀ * scale - 10000 * pad) v``.

    q ``(B, H, Nq, D)``; k and v ``(Bk, H, Nk, D)`` with ``B % Bk == 0``: query batch ``b`` attends to key
    batch ``b // (B // Bk)`` (FIBER's image windows: window ``w`` of image ``i`` is batch ``i * nW + w``),
    and keys are never copied per group. ``key_padding_mask``: bool ``(Bk, Nk)``, True = padding
    (FIBER adds -10000 to those logits); a row whose keys are all padding returns zeros and zero
    gradients. ``scale`` defaults to ``D ** -0.5``. Dtypes fp32, fp16, bf16 (q, k, v alike); any
    ``Nq, Nk >= 1``; the Triton backend takes ``D`` in (32, 64, 128) and saves only q, k, v, the
    output and the row log-sum-exp for backward. Returns ``(B, H, Nq, D)`` in the dtype of q. Under
    ``torch.autocast`` q, k and v are cast to the region's dtype first (``fiber_kernels._autocast``).
    """
    q, k, v = cast_floats(autocast_dtype(q), q, k, v)
    check_cross_attention(q, k, v, key_padding_mask)
    scale = check_scale(scale, q.shape[-1])
    chosen = dispatch.select_backend("cross_attention", dispatch.DeviceInfo.of(q), backend,
                                     inputs={"q": q, "k": k})
    return chosen.impl(q, k, v, key_padding_mask, scale)


def _check_gated_linear(x: object, a: object, weight: object, bias: object, alpha: object, gate: object) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, shape_doc="(..., O)")
    check_tensor("a", a, dtypes=FLOAT_DTYPES, shape_doc="(..., I)")
    check_tensor("weight", weight, ndim=2, dtypes=FLOAT_DTYPES, shape_doc="(O, I)")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES, shape_doc="(O,)")
    check_tensor("alpha", alpha, dtypes=FLOAT_DTYPES, shape_doc="(one element)")
    check_choice("gate", gate, GATES)
    check_same_device(x=x, a=a, weight=weight, bias=bias, alpha=alpha)
    check_same_dtype(x=x, a=a, weight=weight, bias=bias)
    if x.dim() == 0 or a.dim() == 0:
        raise ValueError(f"x (..., O) and a (..., I) must be at least 1-D, got shapes {tuple(x.shape)} and "
                         f"{tuple(a.shape)}")
    if x.shape[:-1] != a.shape[:-1]:
        raise ValueError(f"x (..., O) and a (..., I) must share the leading dims, got {tuple(x.shape)} and "
                         f"{tuple(a.shape)}")
    if tuple(weight.shape) != (x.shape[-1], a.shape[-1]):
        raise ValueError(f"weight must have shape (O, I) = {(x.shape[-1], a.shape[-1])}, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[-1],):
        raise ValueError(f"bias must have shape (O,) = ({x.shape[-1]},), got {tuple(bias.shape)}")
    if alpha.numel() != 1:
        raise ValueError(f"alpha must have exactly one element, got shape {tuple(alpha.shape)}")


def _linear(launcher: str):
    """The ``launcher`` backend: the custom op running that launcher on x and a flattened to 2-D."""
    def impl(x, a, weight, bias, alpha, gate):
        out = gated_residual_linear_op(x.reshape(-1, x.shape[-1]), a.reshape(-1, a.shape[-1]), weight, bias, alpha,
                                       gate, launcher)
        return out.view(x.shape)

    return impl


dispatch.register_launchers("gated_residual_linear", LINEAR_LAUNCHERS, _linear)
dispatch.register_backend("gated_residual_linear", "torch", gated_residual_linear_reference,
                          limits=dispatch.BackendLimits())


def gated_residual_linear(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          alpha: torch.Tensor, gate: str = "identity", *, backend: str = "auto") -> torch.Tensor:
    """``x + g(alpha) * (a @ weightᵀ + bias)``: FIBER's gated output projection as one fused linear.

    x ``(..., O)``, a ``(..., I)`` with the same leading dims, weight ``(O, I)``, bias ``(O,)`` or None
    (x, a, weight, bias share one dtype of fp32/fp16/bf16); alpha a one-element float tensor (FIBER's
    ``alpha_i2t`` / ``alpha_t2i`` of shape (1,)); ``gate`` "identity" (FIBER) or "tanh" (Flamingo).
    Gradients flow to x, a, weight, bias and alpha (dalpha is exact at alpha == 0). Returns ``(..., O)``.
    Under ``torch.autocast`` x, a, weight and bias are cast to the region's dtype (alpha is not), and the
    result has that dtype (``fiber_kernels._autocast``).
    """
    x, a, weight, bias = cast_floats(autocast_dtype(x), x, a, weight, bias)
    _check_gated_linear(x, a, weight, bias, alpha, gate)
    chosen = dispatch.select_backend("gated_residual_linear", dispatch.DeviceInfo.of(x), backend, inputs={"x": x})
    return chosen.impl(x, a, weight, bias, alpha, gate)
