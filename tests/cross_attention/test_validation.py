"""Bad input raises a clear ValueError/TypeError naming the argument and the expected form."""

from __future__ import annotations

import re

import pytest
import torch
from fiber_kernels import BackendNotSupportedError, dispatch
from fiber_kernels.cross_attention import cross_attention, cuda, gated_residual_linear


def _qkv(B=4, Bk=2, H=2, Nq=7, Nk=5, D=32, dtype=torch.float32):
    return torch.randn(B, H, Nq, D, dtype=dtype), torch.randn(Bk, H, Nk, D, dtype=dtype), \
        torch.randn(Bk, H, Nk, D, dtype=dtype)


def _attention_cases():
    q, k, v = _qkv()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    meta = torch.randn(2, 2, 5, 32, device="meta")
    return [
        pytest.param((q[0], k, v, None), {}, ValueError, r"q must be 4-D \(B, H, Nq, D\), got shape \(2, 7, 32\)",
                     id="q-rank"),
        pytest.param((q, k[0], v, None), {}, ValueError, r"k must be 4-D \(Bk, H, Nk, D\)", id="k-rank"),
        pytest.param((q, k, v[..., None], None), {}, ValueError, r"v must be 4-D", id="v-rank"),
        pytest.param(([1.0], k, v, None), {}, TypeError, r"q must be a torch.Tensor \(B, H, Nq, D\), got list",
                     id="q-not-tensor"),
        pytest.param((q.int(), k, v, None), {}, TypeError, r"q must have dtype in \(float32, float16, bfloat16\)",
                     id="q-int"),
        pytest.param((q, k, v.half(), None), {}, TypeError, r"one dtype, got q is torch.float32, k is torch.float32, "
                     r"v is torch.float16", id="mixed-dtype"),
        pytest.param((q, meta, meta, None), {}, ValueError, r"one device, got q on cpu, k on meta, v on meta",
                     id="mixed-device"),
        pytest.param((q, k, v[:, :, :4], None), {}, ValueError, r"k and v must have the same shape", id="kv-shape"),
        pytest.param((q, torch.randn(2, 3, 5, 32), torch.randn(2, 3, 5, 32), None), {}, ValueError,
                     r"same number of heads H, got 2 and 3", id="heads"),
        pytest.param((q, torch.randn(2, 2, 5, 64), torch.randn(2, 2, 5, 64), None), {}, ValueError,
                     r"same head dim D, got 32 and 64", id="head-dim"),
        pytest.param((torch.randn(5, 2, 7, 32), k, v, None), {}, ValueError,
                     r"B must be a multiple of the key batch Bk .* got B=5 and Bk=2", id="groups"),
        pytest.param((q, k, v, torch.zeros(2, 4, dtype=torch.bool)), {}, ValueError,
                     r"key_padding_mask must have shape \(Bk, Nk\) = \(2, 5\), got \(2, 4\)", id="mask-shape"),
        pytest.param((q, k, v, torch.zeros(2, 5)), {}, TypeError, r"key_padding_mask must have dtype in \(bool\)",
                     id="mask-dtype"),
        pytest.param((q, k, v, mask[0]), {}, ValueError, r"key_padding_mask must be 2-D \(Bk, Nk\)", id="mask-rank"),
        pytest.param((q, k, v, mask.to("meta")), {}, ValueError, r"key_padding_mask on meta", id="mask-device"),
        pytest.param((q[:, :, :0], k, v, None), {}, ValueError, r"q must not be empty \(B, H, Nq, D\)",
                     id="empty-q"),
        pytest.param((q, k[:, :, :0], v[:, :, :0], None), {}, ValueError, r"k must not be empty", id="empty-k"),
        pytest.param((q, k, v, None), {"scale": -1.0}, ValueError, r"scale must be a finite float > 0", id="scale"),
        pytest.param((q, k, v, None), {"scale": "0.1"}, TypeError, r"scale must be a float or None, got str",
                     id="scale-type"),
        pytest.param((q, k, v, None), {"backend": "cudnn"}, ValueError, r"backend must be one of", id="backend"),
    ]


@pytest.mark.parametrize("args,kwargs,error,message", _attention_cases())
def test_cross_attention_rejects(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        cross_attention(*args, **kwargs)


def test_triton_backend_reports_head_dim_limit():
    q, k, v = _qkv(D=48)
    with pytest.raises(BackendNotSupportedError, match=r"triton: head dim D must be one of \(32, 64, 128\), got 48"):
        cross_attention(q, k, v, backend="triton")
    assert cross_attention(q, k, v, backend="torch").shape == q.shape  # the torch backend takes any D


def _broadcast(*shape: int) -> torch.Tensor:
    """A ``shape`` view of one row (stride 0): huge shapes at no memory cost."""
    return torch.zeros(*[1] * (len(shape) - 1), shape[-1], dtype=torch.float16).expand(*shape)


@pytest.mark.parametrize("q_shape,k_shape,message", [
    pytest.param((1, 65536, 1, 32), (1, 65536, 1, 32), r"Bk \* H must be <= 65535 for the CUDA kernels \(the grid's "
                 r"y dimension\), got 65536", id="grid-y"),
    pytest.param((2, 1, 2**30 + 1, 32), (1, 1, 3, 32), r"the shared query rows \(B // Bk\) \* Nq and the keys Nk must "
                 r"be <= 2147483647 for the CUDA kernels \(int32 row indices\), got 2147483650 and 3", id="rows"),
    pytest.param((2, 2, 7, 48), (1, 2, 5, 48), r"head dim D must be one of \(32, 64, 128\) for the CUDA kernels, "
                 r"got 48", id="head-dim"),
])
def test_cuda_backend_reports_its_shape_limits(q_shape, k_shape, message):
    """The limits cuda.py raises on are dispatch reasons: "cuda" reports them, "auto" moves on."""
    q, k = _broadcast(*q_shape), _broadcast(*k_shape)
    cuda_backend = dispatch.registered_ops()["cross_attention"]["cuda"]
    sm70 = dispatch.DeviceInfo("cuda", (7, 0))
    reasons = cuda_backend.reasons(sm70, q=q, k=k)
    assert len(reasons) == 1 and re.fullmatch(message, reasons[0])
    with pytest.raises(BackendNotSupportedError, match="cuda: " + message):
        cross_attention(q, k, k, backend="cuda")
    assert dispatch.select_backend("cross_attention", sm70, "auto", inputs={"q": q, "k": k}).name == "torch"
    with pytest.raises(ValueError, match=message):  # what the launcher would raise if called anyway
        cuda.forward(q, k, k, None, 0.1, ops=object())
    fine = _broadcast(35, 12, 144, 64), _broadcast(1, 12, 256, 64)  # FIBER fine: no limit is near
    assert cuda_backend.reasons(sm70, q=fine[0], k=fine[1]) == []


def test_triton_backend_reports_the_gpu_grid_limit():
    q, k = _broadcast(4097, 16, 9, 32), _broadcast(1, 16, 5, 32)  # B * H = 65552: the preprocess grid's y
    triton_backend = dispatch.registered_ops()["cross_attention"]["triton"]
    sm80 = dispatch.DeviceInfo("cuda", (8, 0))
    assert triton_backend.reasons(sm80, q=q, k=k) == [
        "B * H must be <= 65535 on a GPU (the grid's y dimension of the backward preprocess kernel), got 65552"]
    assert triton_backend.reasons(dispatch.DeviceInfo("cpu"), q=q, k=k) == []  # the interpreter has no grid limit
    assert triton_backend.reasons(sm80, q=q[:4095], k=k) == []


def _linear_cases():
    x, a = torch.randn(3, 5, 8), torch.randn(3, 5, 6)
    weight, bias, alpha = torch.randn(8, 6), torch.randn(8), torch.zeros(1)
    return [
        pytest.param((x, a[:, :4], weight, bias, alpha), ValueError, r"must share the leading dims", id="lead"),
        pytest.param((x, a, weight.t(), bias, alpha), ValueError, r"weight must have shape \(O, I\) = \(8, 6\)",
                     id="weight-shape"),
        pytest.param((x, a, weight[0], bias, alpha), ValueError, r"weight must be 2-D \(O, I\)", id="weight-rank"),
        pytest.param((x, a, weight, bias[:7], alpha), ValueError, r"bias must have shape \(O,\) = \(8,\)", id="bias"),
        pytest.param((x, a, weight, bias, torch.zeros(2)), ValueError, r"alpha must have exactly one element",
                     id="alpha-numel"),
        pytest.param((x, a, weight, bias, 0.5), TypeError, r"alpha must be a torch.Tensor", id="alpha-type"),
        pytest.param((x, a.half(), weight, bias, alpha), TypeError, r"one dtype, got x is torch.float32, "
                     r"a is torch.float16", id="mixed-dtype"),
        pytest.param((x, a, weight, bias, alpha.to("meta")), ValueError, r"alpha on meta", id="mixed-device"),
        pytest.param((x[:, :0], a[:, :0], weight, bias, alpha), ValueError, r"x must not be empty", id="empty"),
        pytest.param((x.long(), a, weight, bias, alpha), TypeError, r"x must have dtype in", id="x-dtype"),
    ]


@pytest.mark.parametrize("args,error,message", _linear_cases())
def test_gated_residual_linear_rejects(args, error, message):
    with pytest.raises(error, match=message):
        gated_residual_linear(*args)


def test_gated_residual_linear_rejects_unknown_gate():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"gate must be one of \('identity', 'tanh'\), got 'sigmoid'"):
        gated_residual_linear(x, x, torch.randn(4, 4), None, torch.zeros(1), "sigmoid")


@pytest.mark.parametrize("op,inputs", [
    ("cross_attention", {"q": torch.empty(2, 2, 7, 32), "k": torch.empty(1, 2, 5, 32)}),
    ("gated_residual_linear", {"x": torch.empty(2, 8)}),
])
def test_triton_declines_exact_fp32_on_gpus_and_sm70(op, inputs):
    sm80, sm70 = dispatch.DeviceInfo("cuda", (8, 0)), dispatch.DeviceInfo("cuda", (7, 0))
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with pytest.raises(BackendNotSupportedError, match=r"triton: fp32 inputs with torch.backends.cuda.matmul."
                                                           r"allow_tf32 = False need exact fp32 FMA math"):
            dispatch.select_backend(op, sm80, "triton", inputs=inputs)
        assert dispatch.select_backend(op, sm80, "auto", inputs=inputs).name in ("cuda", "torch")
        with pytest.raises(BackendNotSupportedError, match=r"triton: Triton has no tensor-core path below sm80"):
            dispatch.select_backend(op, sm70, "triton", inputs={k: v.half() for k, v in inputs.items()})
        torch.backends.cuda.matmul.allow_tf32 = True
        assert dispatch.select_backend(op, sm80, "auto", inputs=inputs).name == "triton"
        assert dispatch.select_backend(op, dispatch.DeviceInfo("cpu"), "auto", inputs=inputs).name == "torch"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def test_launcher_tables_refuse_unknown_backend_names() -> None:
    from fiber_kernels.cross_attention.function import cross_attention_op, gated_residual_linear_op

    q = torch.randn(1, 1, 4, 32)
    with pytest.raises(ValueError, match=r"cross_attention: backend must be one of \('triton', 'cuda'\), got 'trtion'"):
        cross_attention_op(q, q, q, None, 0.1, "trtion")
    x, weight = torch.randn(3, 8), torch.randn(8, 8)
    with pytest.raises(ValueError, match=r"gated_residual_linear: backend must be one of \('triton', 'cuda'\)"):
        gated_residual_linear_op(x, x, weight, None, torch.ones(1), "identity", "cpp")
