"""saved_bytes / peak_bytes: eager attention keeps its N x N probabilities, fused attention does not."""

import pytest
import torch
import torch.nn.functional as F
from fiber_kernels.testing import fake_cuda, peak_bytes, saved_bytes
from fiber_kernels.testing import memory as memory_module


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v written out: autograd saves the (B, H, N, N) probabilities."""
    probabilities = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return probabilities @ v


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """What a GPU runs for SDPA in fp16: saves q, k, v, out and the row log-sum-exp."""
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]


B, H, N, D = 2, 3, 64, 16


def _qkv() -> list[torch.Tensor]:
    return [torch.randn(B, H, N, D, requires_grad=True) for _ in range(3)]


def test_eager_attention_saves_probabilities_sdpa_does_not() -> None:
    qkv = _qkv()
    probabilities = B * H * N * N * 4
    # Beyond its inputs, eager attention keeps exactly the (B, H, N, N) fp32 probabilities; SDPA keeps
    # its output and the row log-sum-exp, (B, H, N, D) + (B, H, N) fp32.
    assert saved_bytes(eager_attention, *qkv, count_inputs=False) == probabilities
    assert saved_bytes(sdpa, *qkv, count_inputs=False) == B * H * N * (D + 1) * 4
    # Counting convention: by default the saved inputs q, k, v count too (one storage each).
    inputs = 3 * B * H * N * D * 4
    assert saved_bytes(eager_attention, *qkv) == inputs + probabilities
    assert saved_bytes(sdpa, *qkv) == inputs + B * H * N * (D + 1) * 4


def test_views_and_repeats_count_one_storage() -> None:
    x = torch.randn(1000, requires_grad=True)
    # x * x saves x twice (self and other): one storage.
    assert saved_bytes(lambda t: t * t, x) == 4000
    assert saved_bytes(lambda t: t * t, x, count_inputs=False) == 0
    # exp saves its result: a new storage of 4000 bytes.
    assert saved_bytes(torch.exp, x, count_inputs=False) == 4000


def test_peak_eager_attention_exceeds_sdpa_by_probabilities() -> None:
    qkv = _qkv()
    assert peak_bytes(eager_attention, *qkv) - peak_bytes(sdpa, *qkv) >= B * H * N * N * 4


def test_peak_of_known_graph() -> None:
    x = torch.randn(1000, requires_grad=True)
    # forward: x (4000) + y = exp(x) (4000, saved); backward: ones (4000), grad = ones * y (4000),
    # leaf grad takes it: peak 16000 while ones, y and the new gradient are alive with x.
    assert peak_bytes(torch.exp, x) == 16000
    assert x.grad is None  # the measurement leaves no gradient behind


class _ScaledTanh(torch.autograd.Function):
    """A Python autograd.Function with a non-tensor argument, like the ops' own Functions."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float, w: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        y = torch.tanh(x * w) * scale
        ctx.save_for_backward(x, w, y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        x, w, y = ctx.saved_tensors
        inner = grad * (ctx.scale - y * y / ctx.scale)
        return inner * w, None, (inner * x).sum(0)


def _custom_function(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return _ScaledTanh.apply(x, 2.0, w) @ w.new_ones(w.shape[0], 3)


def _broadcast_bias(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Swin's ``attn + bias.unsqueeze(0)``: the bias gradient must be summed over the broadcast dim."""
    return (x + bias.unsqueeze(0)).softmax(-1)


@pytest.mark.parametrize("fn", [eager_attention, sdpa, "custom", "broadcast"])
def test_python_engine_matches_torch_engine_on_cpu(fn, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The fallback engine used for fake CUDA tensors gives torch's figures where both can run."""
    if fn == "custom":
        fn, inputs = _custom_function, [torch.randn(50, 40, requires_grad=True), torch.randn(40, requires_grad=True)]
    elif fn == "broadcast":
        fn, inputs = _broadcast_bias, [torch.randn(6, 4, 9, requires_grad=True), torch.randn(4, 9, requires_grad=True)]
    else:
        inputs = _qkv()
    expected = peak_bytes(fn, *inputs)
    fn(*inputs).sum().backward()
    expected_grads = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    monkeypatch.setattr(memory_module, "_needs_python_engine", lambda tensors: True)
    assert peak_bytes(fn, *inputs) == expected
    out = fn(*inputs)
    with torch.no_grad():
        memory_module._python_backward([out], [torch.ones_like(out)], [])
    for t, grad in zip(inputs, expected_grads, strict=True):
        torch.testing.assert_close(t.grad, grad)


def test_fake_cuda_at_fiber_swin_window_shape() -> None:
    """FIBER coarse stage 1 window attention: 8 images x 64 windows, 4 heads, 144 tokens, head dim 32,
    fp16, on fake CUDA tensors (about 85 MB of probabilities that are never allocated)."""
    shape = (8 * 64, 4, 144, 32)
    qkv = fake_cuda(*[(shape, torch.float16)] * 3)
    assert all(t.device.type == "cuda" and t.requires_grad for t in qkv)
    probabilities = 8 * 64 * 4 * 144 * 144 * 2
    assert saved_bytes(eager_attention, *qkv, count_inputs=False) == probabilities
    # flash attention: output (fp16) + log-sum-exp (fp32) + its philox seed and offset scalars
    extra = saved_bytes(flash_attention, *qkv, count_inputs=False) - 8 * 64 * 4 * 144 * (32 * 2 + 4)
    assert 0 < extra <= 64
    assert peak_bytes(eager_attention, *qkv) - peak_bytes(flash_attention, *qkv) >= probabilities
    assert all(t.grad is None for t in qkv)


def test_fake_cuda_makes_integer_tensors_without_grad() -> None:
    x, index = fake_cuda(((4, 5), torch.float32), ((7,), torch.int64))
    assert x.requires_grad and not index.requires_grad and index.dtype == torch.int64
    (y,) = fake_cuda(((3,), torch.float16), requires_grad=False)
    assert not y.requires_grad


@pytest.mark.parametrize(("call", "error", "pattern"), [
    (lambda: saved_bytes(3, torch.ones(2)), TypeError, "fn must be callable"),
    (lambda: saved_bytes(torch.exp, 2.0), ValueError, "inputs must contain at least one torch.Tensor"),
    (lambda: saved_bytes(torch.exp, torch.ones(2), count_inputs=1), TypeError, "count_inputs must be a bool"),
    (lambda: peak_bytes(None, torch.ones(2)), TypeError, "fn must be callable"),
    (lambda: peak_bytes(torch.exp, "x"), ValueError, "inputs must contain at least one torch.Tensor"),
    (lambda: peak_bytes(torch.exp, torch.ones(2)), ValueError, "fn must return at least one floating-point tensor"),
    (lambda: peak_bytes(torch.add, *fake_cuda(((2,), torch.float32)), *fake_cuda(((2,), torch.float32))),
     ValueError, "inputs must be fake tensors of one FakeTensorMode"),
    (lambda: fake_cuda(), ValueError, "specs must hold at least one"),
    (lambda: fake_cuda((2, 3)), TypeError, r"specs\[0\] dtype must be a torch.dtype"),
    (lambda: fake_cuda(((2, -1), torch.float32)), ValueError, r"specs\[0\] shape must be a sequence of ints >= 0"),
    (lambda: fake_cuda(((2,), torch.float32), "x"), TypeError, r"specs\[1\] must be a \(shape, dtype\) pair"),
    (lambda: fake_cuda(((2,), torch.float32), requires_grad=None), TypeError, "requires_grad must be a bool"),
    (lambda: fake_cuda(((2,), torch.float32), mode=1), TypeError, "mode must be a FakeTensorMode"),
])
def test_bad_arguments(call, error: type, pattern: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=pattern):
        call()


@torch.library.custom_op("fiber_kernels_testing_tests::scale", mutates_args=())
def _scale_op(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor


@_scale_op.register_fake
def _(x: torch.Tensor, factor: float) -> torch.Tensor:
    return torch.empty_like(x)


def _scale_op_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.factor = inputs[1]


_scale_op.register_autograd(lambda ctx, grad: (grad * ctx.factor, None), setup_context=_scale_op_setup)


def test_custom_op_with_fake_impl_on_fake_cuda() -> None:
    """Our ops are torch.library custom ops with fake impls: they must be measurable on fake CUDA."""
    (x,) = fake_cuda(((1024, 1024), torch.float16))
    # x (2 MiB) + output (2 MiB) + ones (2 MiB) + input gradient (2 MiB); the op saves nothing.
    assert saved_bytes(lambda t: _scale_op(t, 3.0), x) == 0
    assert peak_bytes(lambda t: _scale_op(t, 3.0), x) == 4 * 1024 * 1024 * 2


@torch.library.custom_op("fiber_kernels_testing_tests::shift", mutates_args=())
def _shift_op(x: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
    return x + offset


@_shift_op.register_fake
def _(x: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
    return torch.empty_like(x)


def _shift_op_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.inputs = len(inputs)


# setup_context sees the defaulted argument, so the backward returns a gradient slot for it too.
_shift_op.register_autograd(lambda ctx, grad: (grad,) + (None,) * (ctx.inputs - 1), setup_context=_shift_op_setup)


def test_custom_op_called_without_its_defaulted_argument_on_fake_cuda() -> None:
    """The fallback engine accepts the extra None gradient of an omitted default, as torch's does."""
    (x,) = fake_cuda(((256, 256), torch.float32))
    # x + output + ones + x.grad, 256 KiB each: the backward passes the ones through, and the leaf
    # copies a gradient that someone else (here the caller) still holds
    assert peak_bytes(_shift_op, x) == 4 * 256 * 256 * 4
    cpu = torch.randn(8, requires_grad=True)
    assert peak_bytes(_shift_op, cpu) == 4 * 8 * 4  # torch's own engine agrees on CPU
