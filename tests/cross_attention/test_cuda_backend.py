"""The ``cuda`` launcher end to end through the custom ops and autograd: ``cross_attention_op(..., "cuda")``
and ``gated_residual_linear_op(..., "cuda")`` with ``cuda.py``'s default ops pointed at the host emulation
of the csrc/ kernels, so CPU tensors run the kernels a GPU runs. Forward and every gradient against
FIBER's eager math (fp64 reference, same-dtype PyTorch for the tolerance rule), and ``opcheck``."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from fiber_kernels.cross_attention import cuda
from fiber_kernels.cross_attention.function import (
    cross_attention_backward_op,
    cross_attention_op,
    gated_residual_linear_backward_op,
    gated_residual_linear_op,
)
from fiber_kernels.testing import emu

from ._cases import fresh, make_mask, make_qkv
from .conftest import assert_linear_matches_reference, assert_matches_reference, with_autograd


@pytest.fixture
def emulated(ops):
    """``cuda.py`` launches ``torch.ops.fiber_kernels_C`` by default; here its default is the emulation."""
    with emu.launching_on(ops, cuda):
        yield ops


@pytest.mark.parametrize("B,Bk,mask_kind", [
    pytest.param(8, 2, "partial", id="8-windows-on-2-images-padded"),
    pytest.param(4, 2, "full", id="2-groups-fully-padded-row"),
])
def test_cross_attention_op_on_the_cuda_launcher(emulated, B, Bk, mask_kind):
    """fp16 (the wmma path), query groups sharing keys, padded keys (and a key batch with every key padded,
    whose query rows give zeros and zero gradients): out, dq, dk, dv via autograd."""
    H, Nq, Nk, D = 2, 17, 11, 32
    q, k, v = make_qkv(B, Bk, H, Nq, Nk, D)
    mask = make_mask(Bk, Nk, mask_kind)
    assert mask.any() and mask.all(dim=1).any() == (mask_kind == "full")
    grad = torch.randn(B, H, Nq, D)
    launches = emulated.launches()
    kernel = with_autograd(lambda *t: cross_attention_op(*t, D ** -0.5, "cuda")[0])
    ours = assert_matches_reference(kernel, q, k, v, mask, grad, name="cuda op", dtype=torch.float16)
    assert emulated.launches() == launches + 4  # forward, delta, dq, dk/dv: the emulated CUDA kernels ran
    if mask_kind == "full":  # the last key batch and its query group: exact zeros, never NaN
        out, dq, dk, dv = ours
        group = B // Bk
        for got in (out[-group:], dq[-group:], dk[-1], dv[-1]):
            assert torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize("gate", ["identity", "tanh"])
def test_gated_residual_linear_op_on_the_cuda_launcher(emulated, gate):
    """fp16: out and the gradients of x, a, weight, bias and alpha via autograd."""
    rows, in_features, out_features = 37, 24, 20
    inputs = [torch.randn(rows, out_features), torch.randn(rows, in_features),
              torch.randn(out_features, in_features) / in_features ** 0.5, torch.randn(out_features),
              torch.tensor([0.7])]
    grad = torch.randn(rows, out_features)
    launches = emulated.launches()
    assert_linear_matches_reference(partial(gated_residual_linear_op, launcher="cuda"), inputs, grad, gate, "cuda op",
                                    torch.float16)
    assert emulated.launches() == launches + 3  # forward; da and G in the backward


def test_opcheck_on_the_cuda_launcher(emulated):
    """Schema, fake impl, autograd registration and AOT dispatch of the four ops with ``launcher="cuda"``."""
    q, k, v = (t.detach() for t in make_qkv(4, 2, 1, 9, 5, 32))
    mask = make_mask(2, 5, "full")
    launches = emulated.launches()
    torch.library.opcheck(cross_attention_op, (*fresh(q, k, v), mask, 0.2, "cuda"))
    out, lse = cross_attention_op(q, k, v, mask, 0.2, "cuda")
    torch.library.opcheck(cross_attention_backward_op, (torch.randn_like(out), q, k, v, out, lse, mask, 0.2, "cuda"))
    x, a, weight, bias = torch.randn(6, 16), torch.randn(6, 32), torch.randn(16, 32), torch.randn(16)
    alpha = torch.tensor([0.3])
    torch.library.opcheck(gated_residual_linear_op, (*fresh(x, a, weight, bias, alpha), "tanh", "cuda"))
    torch.library.opcheck(gated_residual_linear_backward_op, (torch.randn(6, 16), a, weight, bias, alpha, "identity",
                                                              "cuda"))
    assert emulated.launches() > launches
