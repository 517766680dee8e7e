"""The attention core against FIBER's eager math: forward and dq/dk/dv, Triton (interpreter) and torch
backends, fp32 and fp16, with the flash-attention tolerance rule against an fp64 reference."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.cross_attention import cross_attention, cross_attention_reference, triton_attention
from fiber_kernels.testing.memory import peak_bytes
from fiber_kernels.work_buffers import total_bytes

from ._cases import CASES, make_mask, make_qkv
from .conftest import assert_matches_reference, with_autograd

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")]


def _backend(name: str):
    return with_autograd(lambda q, k, v, mask: cross_attention(q, k, v, mask, backend=name))


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(case, dtype, backend):
    assert_matches_reference(_backend(backend), *case.inputs(), name=backend, dtype=dtype)


def test_fully_padded_rows_are_zero_with_zero_gradients():
    q, k, v = make_qkv(4, 2, 2, 49, 5, 32)
    mask = make_mask(2, 5, "full")
    out = cross_attention(q, k, v, mask, backend="triton")
    out.backward(torch.randn_like(out))
    assert torch.equal(out[2:], torch.zeros_like(out[2:]))  # batches 2, 3 use the all-padding key batch 1
    assert torch.equal(q.grad[2:], torch.zeros_like(q.grad[2:]))
    assert torch.equal(k.grad[1], torch.zeros_like(k.grad[1])) and torch.equal(v.grad[1], torch.zeros_like(v.grad[1]))
    assert out[:2].abs().sum() > 0 and k.grad[0].abs().sum() > 0


def test_masked_logits_get_fiber_minus_10000_not_minus_inf():
    # Logits of order 1e4 make -10000 differ from excluding the key: FIBER's additive mask is the contract.
    q = torch.full((1, 1, 1, 32), 0.0)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 2, 32)
    k[0, 0, 1, 0] = 10000.5 * 32 ** 0.5  # padded key: logit 10000.5 - 10000 = 0.5 against 0
    v = torch.zeros(1, 1, 2, 32)
    v[0, 0, 1] = 1.0
    mask = torch.tensor([[False, True]])
    expected = torch.sigmoid(torch.tensor(0.5))  # weight of the padded key: e^0.5 / (e^0 + e^0.5)
    for backend in ("triton", "torch"):
        out = cross_attention(q, k, v, mask, backend=backend)
        assert out[0, 0, 0, 0].item() == pytest.approx(expected.item(), rel=1e-3), backend
    assert cross_attention_reference(q, k, v, mask)[0, 0, 0, 0].item() == pytest.approx(expected.item(), rel=1e-3)


def test_non_contiguous_inputs():
    # FIBER layouts: q is a (B, N, H, D) projection viewed as (B, H, N, D); k, v are slices of one kv linear.
    B, Bk, H, Nq, Nk, D = 4, 2, 2, 144, 5, 32  # 288 shared rows: dk/dv summed from split partials
    q = torch.randn(B, Nq, H, D).transpose(1, 2).requires_grad_()
    kv = torch.randn(Bk, Nk, 2, H, D)
    k = kv[:, :, 0].transpose(1, 2).requires_grad_()
    v = kv[:, :, 1].transpose(1, 2).requires_grad_()
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    config = triton_attention.attention_config("dkdv", D, q.dtype, q.device)
    assert triton_attention.dkdv_plan(q.shape, k.shape, config)[0] > 1
    mask = make_mask(Bk, Nk, "partial")
    grad = torch.randn(B, Nq, H, D).transpose(1, 2)  # a non-contiguous incoming gradient too
    assert_matches_reference(_backend("triton"), q, k, v, mask, grad, name="triton")


def test_head_dim_128_forward_and_backward():
    q, k, v = make_qkv(2, 1, 1, 49, 40, 128)
    mask = make_mask(1, 40, "partial")
    grad = torch.randn(2, 1, 49, 128)
    assert_matches_reference(_backend("triton"), q, k, v, mask, grad, name="triton")


def test_backward_is_deterministic_and_split_independent():
    q, k, v = make_qkv(4, 2, 1, 144, 40, 32)
    mask = make_mask(2, 40, "partial")
    scale = 32 ** -0.5
    out, lse = triton_attention.cross_attention_fwd(q.detach(), k.detach(), v.detach(), mask, scale)
    grad = torch.randn_like(out)
    args = (grad, q.detach(), k.detach(), v.detach(), out, lse, mask, scale)
    config = triton_attention.attention_config("dkdv", 32, q.dtype, q.device)
    assert triton_attention.dkdv_plan(q.shape, k.shape, config)[0] > 1  # the auto plan splits the 288 shared rows
    first, second = triton_attention.cross_attention_bwd(*args), triton_attention.cross_attention_bwd(*args)
    one_split = triton_attention.cross_attention_bwd(*args, splits=1)
    for a, b, c in zip(first, second, one_split, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


class _NoLaunch:
    """A Triton kernel whose launches do nothing: the launcher's own allocations are all that runs."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("B,Bk,H,Nq,Nk,D,dtype,split", [
    pytest.param(8, 2, 2, 144, 40, 32, torch.float16, True, id="split-partials-fp16"),
    pytest.param(2, 2, 3, 40, 70, 64, torch.float32, False, id="one-split-fp32"),
])
def test_work_buffers_are_what_the_launcher_allocates(monkeypatch, B, Bk, H, Nq, Nk, D, dtype, split):
    """``work_buffers`` (what memory benchmarks add to fake-tensor peaks) sum to the peak bytes the
    backward launcher holds besides its inputs and dq, dk, dv, measured on its real allocations."""
    for name in ("_cross_attention_bwd_preprocess_kernel", "_cross_attention_bwd_dq_kernel",
                 "_cross_attention_bwd_dkdv_kernel"):
        monkeypatch.setattr(triton_attention, name, _NoLaunch())
    q, k, v = (t.detach().to(dtype) for t in make_qkv(B, Bk, H, Nq, Nk, D))
    inputs = (torch.empty_like(q), q, k, v, torch.empty_like(q), torch.empty(B, H, Nq), make_mask(Bk, Nk, "partial"))
    token = torch.zeros(1, requires_grad=True)  # peak_bytes back-propagates an output: this one, after the launcher
    grads = []

    def launch(*tensors):
        grads.extend(triton_attention.cross_attention_bwd(*tensors[:-1], 0.2))
        return tensors[-1].clone()

    peak = peak_bytes(launch, *inputs, token)
    nbytes = sum(t.untyped_storage().nbytes() for t in (*inputs, token, *grads))
    buffers = triton_attention.work_buffers(q.shape, k.shape, dtype, q.device)
    names = [buffer.name for buffer in buffers]
    assert names == (["delta", "dk_part", "dv_part", "partial_sum"] if split else ["delta"])
    assert peak - nbytes == total_bytes(buffers)


def test_lse_is_saved_and_inf_for_rows_without_keys():
    q, k, v = make_qkv(4, 2, 1, 49, 5, 32)
    mask = make_mask(2, 5, "full")
    out, lse = triton_attention.cross_attention_fwd(q.detach(), k.detach(), v.detach(), mask, 32 ** -0.5)
    assert lse.shape == (4, 1, 49) and lse.dtype == torch.float32
    assert torch.isinf(lse[2:]).all() and torch.isfinite(lse[:2]).all()
    logits = (q[:2].detach() @ k[:1].detach().transpose(-2, -1)) * 32 ** -0.5 + mask[0].float() * -10000.0
    torch.testing.assert_close(lse[:2], torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)
