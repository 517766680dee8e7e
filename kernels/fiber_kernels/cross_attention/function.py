"""torch.library custom ops (namespace ``fiber_kernels``) around the Triton kernels, with fake
implementations (FakeTensorMode / torch.compile trace them) and autograd.

``fiber_kernels::cross_attention`` saves q, k, v, out, the row log-sum-exp and the (small) key mask;
``fiber_kernels::gated_residual_linear`` saves a, weight, bias and alpha (never ``a @ Wᵀ + b``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import register_flop_formula

from ..dispatch import Launchers, pick_launcher
from . import cuda, triton_attention, triton_linear
from .reference import gate_value

# The backends that run inside these custom ops, by name (api.py registers every entry with dispatch): the launchers
# (cuda.py mirrors triton_attention.py / triton_linear.py), the limits of their kernels and their dispatch reasons.
# Any other name is refused (dispatch.pick_launcher).
ATTENTION_LAUNCHERS = {
    "triton": Launchers(triton_attention.cross_attention_fwd, triton_attention.cross_attention_bwd,
                        triton_attention.LIMITS, triton_attention.reasons),
    "cuda": Launchers(cuda.forward, cuda.backward, cuda.LIMITS, cuda.reasons),
}
LINEAR_LAUNCHERS = {
    "triton": Launchers(triton_linear.gated_linear_fwd, triton_linear.gated_linear_bwd, triton_linear.LIMITS,
                        triton_linear.reasons),
    "cuda": Launchers(cuda.gated_linear_forward, cuda.gated_linear_backward, cuda.LINEAR_LIMITS),
}


@torch.library.custom_op("fiber_kernels::cross_attention", mutates_args=())
def cross_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
                       scale: float, launcher: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped cross-attention forward: ``(out (B, H, Nq, D), lse (B, H, Nq) fp32)``."""
    return pick_launcher("cross_attention", ATTENTION_LAUNCHERS, launcher).forward(q, k, v, key_padding_mask, scale)


@cross_attention_op.register_fake
def _(q, k, v, key_padding_mask, scale, launcher="triton"):
    batch, heads, seqlen_q, _ = q.shape
    lse = q.new_empty(batch, heads, seqlen_q, dtype=torch.float32)
    return triton_attention.output_like(q), lse


@torch.library.custom_op("fiber_kernels::cross_attention_backward", mutates_args=())
def cross_attention_backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                out: torch.Tensor, lse: torch.Tensor, key_padding_mask: torch.Tensor | None,
                                scale: float,
                                launcher: str = "triton") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv of ``fiber_kernels::cross_attention`` (dk/dv summed over the query groups sharing keys)."""
    backward = pick_launcher("cross_attention", ATTENTION_LAUNCHERS, launcher).backward
    return backward(grad_out, q, k, v, out, lse, key_padding_mask, scale)


@cross_attention_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, key_padding_mask, scale, launcher="triton"):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _cross_attention_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, key_padding_mask, scale, launcher = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
    ctx.scale = scale
    ctx.launcher = launcher


def _cross_attention_grad(ctx: Any, grad_out: torch.Tensor, grad_lse: torch.Tensor | None) -> tuple:
    q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
    dq, dk, dv = cross_attention_backward_op(grad_out, q, k, v, out, lse, key_padding_mask, ctx.scale, ctx.launcher)
    return dq, dk, dv, None, None, None


cross_attention_op.register_autograd(_cross_attention_grad, setup_context=_cross_attention_setup)


@torch.library.custom_op("fiber_kernels::gated_residual_linear", mutates_args=())
def gated_residual_linear_op(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             alpha: torch.Tensor, gate: str, launcher: str = "triton") -> torch.Tensor:
    """``x + g(alpha) * (a @ weightᵀ + bias)`` for 2-D x ``(M, O)`` and a ``(M, I)``."""
    gate_tensor = gate_value(alpha.detach(), gate).to(torch.float32).reshape(1)
    return pick_launcher("gated_residual_linear", LINEAR_LAUNCHERS, launcher).forward(x, a, weight, bias, gate_tensor)


@gated_residual_linear_op.register_fake
def _(x, a, weight, bias, alpha, gate, launcher="triton"):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fiber_kernels::gated_residual_linear_backward", mutates_args=())
def gated_residual_linear_backward_op(grad_out: torch.Tensor, a: torch.Tensor, weight: torch.Tensor,
                                      bias: torch.Tensor | None, alpha: torch.Tensor,
                                      gate: str, launcher: str = "triton"
                                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(da, dweight, dbias, dalpha)`` of ``fiber_kernels::gated_residual_linear`` (dbias of shape (O,))."""
    alpha32 = alpha.detach().to(torch.float32)
    gate32 = gate_value(alpha32, gate).reshape(1)
    gate_slope = 1.0 - gate32 * gate32 if gate == "tanh" else torch.ones_like(gate32)
    backward = pick_launcher("gated_residual_linear", LINEAR_LAUNCHERS, launcher).backward
    grad_a, outer = backward(grad_out, a, weight, gate32)
    column_sum = grad_out.sum(0, dtype=torch.float32)
    projected = (outer * weight).sum(dtype=torch.float32)
    if bias is not None:
        projected = projected + (column_sum * bias).sum(dtype=torch.float32)
    grad_alpha = (gate_slope * projected).reshape(alpha.shape).to(alpha.dtype)
    grad_weight = (gate32 * outer).to(weight.dtype)
    grad_bias = (gate32 * column_sum).to(weight.dtype)
    return grad_a, grad_weight, grad_bias, grad_alpha


@gated_residual_linear_backward_op.register_fake
def _(grad_out, a, weight, bias, alpha, gate, launcher="triton"):
    return (torch.empty_like(a, memory_format=torch.contiguous_format), torch.empty_like(weight),
            weight.new_empty(weight.shape[0]), torch.empty_like(alpha))


def _gated_linear_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, a, weight, bias, alpha, gate, launcher = inputs
    ctx.save_for_backward(a, weight, bias, alpha)
    ctx.gate = gate
    ctx.launcher = launcher


def _gated_linear_grad(ctx: Any, grad_out: torch.Tensor) -> tuple:
    a, weight, bias, alpha = ctx.saved_tensors
    grad_a, grad_weight, grad_bias, grad_alpha = gated_residual_linear_backward_op(
        grad_out, a, weight, bias, alpha, ctx.gate, ctx.launcher)
    return grad_out, grad_a, grad_weight, grad_bias if bias is not None else None, grad_alpha, None, None


gated_residual_linear_op.register_autograd(_gated_linear_grad, setup_context=_gated_linear_setup)


# FLOPs the kernels execute (multiply-add = 2), for torch.utils.flop_counter and the roofline projection.
def _attention_matmul(q_shape, k_shape) -> int:
    batch, heads, seqlen_q, head_dim = q_shape
    return 2 * batch * heads * seqlen_q * k_shape[2] * head_dim


@register_flop_formula(torch.ops.fiber_kernels.cross_attention)
def _(q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _attention_matmul(q_shape, k_shape)  # q kᵀ, p v


@register_flop_formula(torch.ops.fiber_kernels.cross_attention_backward)
def _(grad_shape, q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    return 7 * _attention_matmul(q_shape, k_shape)  # dq: s, dp, dq; dk/dv: s, dv, dp, dk (s, dp recomputed)


@register_flop_formula(torch.ops.fiber_kernels.gated_residual_linear)
def _(x_shape, a_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * weight_shape[0]


@register_flop_formula(torch.ops.fiber_kernels.gated_residual_linear_backward)
def _(grad_shape, a_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 4 * a_shape[0] * a_shape[1] * weight_shape[0]  # da = dy W, G = dyᵀ a
