"""The csrc/ cross-attention CUDA kernels under the host emulation (docs/emulation.md), called through
``fiber_kernels.cross_attention.cuda`` exactly as a GPU user calls ``torch.ops.fiber_kernels_C``:
forward and dq/dk/dv against FIBER's eager math (fp64 reference, flash-attention tolerance rule),
fp32 (FMA), fp16 (wmma tensor-core path) and bf16 (FMA), under several thread-schedule seeds."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.cross_attention import cuda, triton_attention

from ._cases import CASES, make_mask, make_qkv
from .conftest import assert_matches_reference

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16")]


def _kernels(ops, q, k, v, mask, grad, seed):
    scale = q.shape[-1] ** -0.5
    with ops.schedule(seed):
        out, lse = cuda.forward(q, k, v, mask, scale, ops=ops)
        dq, dk, dv = cuda.backward(grad, q, k, v, out, lse, mask, scale, ops=ops)
    return [out, dq, dk, dv], lse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(ops, case, dtype):
    lses = []

    def kernel(*inputs):
        outputs, lse = _kernels(ops, *inputs, seed=case.B + case.Nq)
        lses.append(lse)
        return outputs

    launches = ops.launches()
    assert_matches_reference(kernel, *case.inputs(), name="cuda", dtype=dtype)
    assert ops.launches() == launches + 4  # forward, delta, dq, dk/dv: the emulated kernels really ran
    assert lses[0].dtype == torch.float32 and lses[0].shape == (case.B, case.H, case.Nq)


def test_lse_and_layout_match_the_triton_launcher(ops):
    """The backends are interchangeable: same lse (natural log, +inf on rows with no key) and out layout."""
    q, k, v = (t.detach() for t in make_qkv(4, 2, 2, 33, 7, 32))
    mask = make_mask(2, 7, "full")
    out, lse = cuda.forward(q, k, v, mask, 0.2, ops=ops)
    out_triton, lse_triton = triton_attention.cross_attention_fwd(q, k, v, mask, 0.2)
    assert out.stride() == out_triton.stride()
    assert torch.equal(torch.isinf(lse), torch.isinf(lse_triton)) and torch.isinf(lse[2:]).all()
    torch.testing.assert_close(lse[:2], lse_triton[:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, out_triton, rtol=1e-5, atol=1e-5)
    # the CUDA backward accepts the Triton forward's saved tensors
    grad = torch.randn_like(out)
    ours = cuda.backward(grad, q, k, v, out_triton, lse_triton, mask, 0.2, ops=ops)
    theirs = triton_attention.cross_attention_bwd(grad, q, k, v, out_triton, lse_triton, mask, 0.2)
    for got, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_schedule_seeds_give_the_same_result(ops, seed):
    """Fixed-order sums, no atomics: every thread schedule gives bit-identical outputs and gradients."""
    q, k, v = (t.detach().half() for t in make_qkv(4, 2, 1, 30, 19, 32))
    mask = make_mask(2, 19, "partial")
    grad = torch.randn(4, 1, 30, 32).half()
    baseline, _ = _kernels(ops, q, k, v, mask, grad, seed=0)
    other, _ = _kernels(ops, q, k, v, mask, grad, seed=seed)
    for got, expected in zip(other, baseline, strict=True):
        assert torch.equal(got, expected)


def test_fully_padded_rows_are_zero_with_zero_gradients(ops):
    q, k, v = (t.detach() for t in make_qkv(4, 2, 1, 49, 5, 32))
    mask = make_mask(2, 5, "full")
    (out, dq, dk, dv), lse = _kernels(ops, q, k, v, mask, torch.randn(4, 1, 49, 32), seed=3)
    assert torch.equal(out[2:], torch.zeros_like(out[2:]))  # batches 2, 3 use the all-padding key batch 1
    assert torch.equal(dq[2:], torch.zeros_like(dq[2:]))
    assert torch.equal(dk[1], torch.zeros_like(dk[1])) and torch.equal(dv[1], torch.zeros_like(dv[1]))
    assert torch.isinf(lse[2:]).all() and torch.isfinite(lse[:2]).all()
    assert out[:2].abs().sum() > 0 and dk[0].abs().sum() > 0


def test_non_contiguous_inputs(ops):
    """q, k, v as transposed views of (B, N, H, D) projections, and a sliced mask: strides are honoured."""
    q = torch.randn(4, 23, 2, 64).transpose(1, 2)
    k = torch.randn(2, 9, 2, 64).transpose(1, 2)
    v = torch.randn(2, 2, 9, 128)[..., ::2]
    mask = torch.zeros(2, 18, dtype=torch.bool)
    mask[:, 1::4] = True
    mask = mask[:, ::2]
    grad = torch.randn(4, 2, 23, 64)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous() or mask.is_contiguous())
    assert_matches_reference(lambda *inputs: _kernels(ops, *inputs, seed=5)[0], q, k, v, mask, grad, name="cuda")


def _qkv(batch=4, key_batches=2, heads=2, seqlen_q=5, seqlen_k=3, head_dim=32, dtype=torch.float32):
    return (torch.randn(batch, heads, seqlen_q, head_dim, dtype=dtype),
            torch.randn(key_batches, heads, seqlen_k, head_dim, dtype=dtype),
            torch.randn(key_batches, heads, seqlen_k, head_dim, dtype=dtype))


def _bad_forward_inputs():
    q, k, v = _qkv()
    mask = torch.zeros(2, 3, dtype=torch.bool)
    return [
        pytest.param((q[0], k, v, None, 0.1), ValueError, r"q must be 4-D \(B, H, Nq, D\)", id="q-rank"),
        pytest.param((q, k[0], v, None, 0.1), ValueError, r"k must be 4-D \(Bk, H, Nk, D\)", id="k-rank"),
        pytest.param((q, k, v.numpy(), None, 0.1), TypeError, "v must be a torch.Tensor", id="v-type"),
        pytest.param((q.int(), k, v, None, 0.1), TypeError, "q must have dtype in", id="q-dtype"),
        pytest.param((q, k.half(), v, None, 0.1), TypeError, "all tensors must have one dtype", id="mixed-dtype"),
        pytest.param((q, k, v[:, :, :2], None, 0.1), ValueError, "k and v must have the same shape", id="kv-shape"),
        pytest.param((q, *_qkv(heads=3)[1:], None, 0.1), ValueError, "the same number of heads H", id="heads"),
        pytest.param((q, *_qkv(head_dim=64)[1:], None, 0.1), ValueError, "must have the same head dim D", id="dim"),
        pytest.param((*_qkv(head_dim=48), None, 0.1), ValueError, r"head dim D must be one of \(32, 64, 128\)",
                     id="unsupported-dim"),
        pytest.param((*_qkv(batch=3), None, 0.1), ValueError, "B must be a multiple of the key batch Bk",
                     id="groups"),
        pytest.param((q[:, :, :0], k, v, None, 0.1), ValueError, "q must not be empty", id="empty"),
        pytest.param((q, k, v, mask[:, :2], 0.1), ValueError, r"key_padding_mask must have shape \(Bk, Nk\)",
                     id="mask-shape"),
        pytest.param((q, k, v, mask.float(), 0.1), TypeError, "key_padding_mask must have dtype in", id="mask-dtype"),
        pytest.param((q, k, v, mask.to("meta"), 0.1), ValueError, "all tensors must be on one device", id="device"),
        pytest.param((q, k, v, None, "0.1"), TypeError, "scale must be a float", id="scale-type"),
        pytest.param((q, k, v, None, -1.0), ValueError, "scale must be a finite float > 0", id="scale-value"),
        pytest.param((*_qkv(key_batches=1, heads=65536, seqlen_q=1, seqlen_k=1), None, 0.1), ValueError,
                     r"Bk \* H must be <= 65535", id="grid-y"),
    ]


@pytest.mark.parametrize("args,error,message", _bad_forward_inputs())
def test_forward_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        cuda.forward(*args, ops=object())  # rejected before any kernel is called


def _bad_backward_inputs():
    q, k, v = _qkv()
    out, lse = torch.zeros_like(q), torch.zeros(4, 2, 5)
    return [
        pytest.param((q[:, :1], q, k, v, out, lse), ValueError, r"grad_out must have the shape of q", id="grad-shape"),
        pytest.param((q.half(), q, k, v, out, lse), TypeError, "grad_out must have dtype in", id="grad-dtype"),
        pytest.param((q, q, k, v, out[0], lse), ValueError, "out must be 4-D", id="out-rank"),
        pytest.param((q, q, k, v, out, lse.half()), TypeError, "lse must have dtype in", id="lse-dtype"),
        pytest.param((q, q, k, v, out, lse[:, :, :2]), ValueError, r"lse must have shape \(B, H, Nq\)",
                     id="lse-shape"),
        pytest.param((q, q, k, v, out, lse.to("meta")), ValueError, "all tensors must be on one device",
                     id="lse-device"),
        pytest.param((q, q[0], k, v, out, lse), ValueError, "q must be 4-D", id="q-rank"),
    ]


@pytest.mark.parametrize("args,error,message", _bad_backward_inputs())
def test_backward_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        cuda.backward(*args, None, 0.1, ops=object())
