"""Triton kernels (under TRITON_INTERPRET=1) against the eager Swin reference: forward and the
gradients of qkv, the bias table and the qkv bias, fp32 and fp16 (testing.assert_close_to_reference)."""

from __future__ import annotations

import inspect

import pytest
import torch
from fiber_kernels.window_attention import triton_bwd, window_attention
from fiber_kernels.window_attention.function import window_attention_op
from fiber_kernels.window_attention.triton_bwd import num_splits_for, window_attention_bwd
from fiber_kernels.window_attention.triton_fwd import window_attention_fwd

from ._cases import CASES, FIBER_25X42, FIBER_25X42_H1, Case, make_inputs
from .conftest import assert_matches_reference, with_autograd

# Under -m slow: the 4-head FIBER map, and fp16 of two more cases, in both dtypes.
SLOW_CASES = [FIBER_25X42, CASES[7], CASES[5]]


def _triton(case: Case):
    return with_autograd(lambda qkv, table, bias: window_attention(
        qkv, table, case.heads, case.window, case.shift, qkv_bias=bias, shift_first=case.shift_first,
        backend="triton"))


def _check_case(case: Case, dtype: torch.dtype) -> None:
    assert_matches_reference(case, dtype, _triton(case))


@pytest.mark.parametrize("case", [*CASES, FIBER_25X42_H1], ids=str)
def test_triton_matches_reference_fp32(case: Case) -> None:
    _check_case(case, torch.float32)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], FIBER_25X42_H1], ids=str)
def test_triton_matches_reference_fp16(case: Case) -> None:
    _check_case(case, torch.float16)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", SLOW_CASES, ids=str)
def test_triton_matches_reference_slow_cases(case: Case, dtype: torch.dtype) -> None:
    _check_case(case, dtype)


def test_padded_tokens_are_qkv_bias_and_their_outputs_dropped() -> None:
    # Swin pads the normed map with zeros before the qkv linear: a padded token is exactly the bias.
    # So the kernel on the 10x12 map with qkv_bias equals the kernel on the 14x14 map whose extra
    # tokens hold the bias (and no qkv_bias), cropped; without padding the bias changes nothing.
    qkv, table, bias = make_inputs(Case(1, 10, 12, 3, 32, (7, 7), (3, 3)), torch.float32)
    padded = bias.expand(1, 14, 14, bias.numel()).clone()
    padded[:, :10, :12] = qkv
    got = window_attention(qkv, table, 3, 7, 3, qkv_bias=bias, backend="triton")
    explicit = window_attention(padded, table, 3, 7, 3, backend="triton")[:, :10, :12]
    torch.testing.assert_close(got, explicit, rtol=1e-5, atol=1e-5)
    assert (got - window_attention(qkv, table, 3, 7, 3, backend="triton")).abs().max() > 1e-3
    full = padded[:, :7, :7].contiguous()
    assert torch.equal(window_attention(full, table, 3, 7, 0, qkv_bias=bias, backend="triton"),
                       window_attention(full, table, 3, 7, 0, backend="triton"))


def test_several_windows_per_program_with_a_tail() -> None:
    # 3 windows looped by programs of 2 (the second program's loop stops at the last window).
    case = Case(1, 7, 21, 3, 32, (7, 7), (3, 3))
    qkv, table, bias = make_inputs(case, torch.float32)
    geometry = case.geometry()
    out1, lse1 = window_attention_fwd(qkv, table, bias, geometry, windows_per_prog=1)
    out2, lse2 = window_attention_fwd(qkv, table, bias, geometry, windows_per_prog=2)
    assert torch.equal(out1, out2) and torch.equal(lse1, lse2)
    grad = torch.randn_like(out1)
    grads1 = window_attention_bwd(grad, qkv, table, bias, out1, lse1, geometry, windows_per_prog=1)
    grads2 = window_attention_bwd(grad, qkv, table, bias, out1, lse1, geometry, windows_per_prog=2)
    for first, second in zip(grads1, grads2, strict=True):
        assert torch.equal(first, second)


def test_table_gradient_is_bitwise_deterministic() -> None:
    case = Case(1, 14, 14, 3, 32, (7, 7), (3, 3))
    qkv, table, bias = make_inputs(case, torch.float32)
    out, lse = window_attention_op(qkv, table, bias, 3, 7, 7, 3, 3, 32 ** -0.5, -100.0, False)
    grad = torch.randn_like(out)
    geometry = case.geometry()
    first = window_attention_bwd(grad, qkv, table, bias, out, lse, geometry)
    second = window_attention_bwd(grad, qkv, table, bias, out, lse, geometry)
    assert num_splits_for(4, 3, 1)[0] > 1  # the table gradient really is summed from several partials
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_backward_uses_no_atomics() -> None:
    # The interpreter runs atomics in program order, so bitwise equality above cannot catch GPU
    # races; the kernels' source must simply contain none.
    assert "tl.atomic" not in inspect.getsource(triton_bwd)


def test_table_gradient_partials_are_small_at_fiber_shapes() -> None:
    # Stage 1 at 384x384, batch 8: 512 windows x 4 heads of 144 tokens. The partial buffer must stay
    # far below the (windows, heads, N, N) attention-gradient tensor.
    splits, per_split = num_splits_for(8 * 64, 4, 9)
    assert splits * per_split >= 8 * 64
    assert splits * 4 * 144 * 144 * 4 < 8 * 64 * 4 * 144 * 144 * 4 / 32


@pytest.mark.gpu
def test_table_gradient_deterministic_on_gpu() -> None:
    case = Case(8, 48, 48, 8, 32, (12, 12), (6, 6))
    qkv, table, bias = (t.cuda().half() for t in make_inputs(case, torch.float32))
    qkv.requires_grad_()
    table.requires_grad_()
    grads = []
    for _ in range(2):
        out = window_attention(qkv, table, 8, 12, 6, qkv_bias=bias, backend="triton")
        grads.append(torch.autograd.grad(out.float().square().sum(), (qkv, table)))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_custom_op_passes_opcheck() -> None:
    # schema, fake implementation against the real one, autograd registration, AOT dispatch
    qkv, table, bias = make_inputs(Case(1, 5, 6, 3, 32, (4, 4), (2, 2)), torch.float32)
    args = (qkv.requires_grad_(), table.requires_grad_(), bias.requires_grad_(), 3, 4, 4, 2, 2, 32 ** -0.5, -100.0,
            False)
    torch.library.opcheck(window_attention_op, args)


def test_fake_tensors_trace_the_op_at_fiber_shapes() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        qkv = torch.empty(2, 50, 84, 3 * 512, device="cuda", dtype=torch.bfloat16)
        table = torch.empty(23 * 23, 16, device="cuda", dtype=torch.bfloat16)
        out = window_attention(qkv, table, 16, 12, 6, backend="triton")
        _, lse = window_attention_op(qkv, table, None, 16, 12, 12, 6, 6, 32 ** -0.5, -100.0, False)
    assert out.shape == (2, 50, 84, 512) and out.dtype == torch.bfloat16
    assert lse.shape == (2 * 5 * 7, 16, 144) and lse.dtype == torch.float32


def test_backward_plan_names_the_buffers_the_launcher_allocates() -> None:
    # bench/bench_window_attention.py reports these bytes as the backward's work memory (unseen on
    # fake tensors): each must be a tensor the launcher really allocates, with that shape and dtype.
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Allocations(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.made: list[tuple[tuple[int, ...], torch.dtype]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            storage = (lambda tree: {t.untyped_storage().data_ptr(): t for t in tree_leaves(tree)
                                     if isinstance(t, torch.Tensor)})
            inputs = storage((args, kwargs))
            self.made += [(tuple(t.shape), t.dtype) for ptr, t in storage(result).items() if ptr not in inputs]
            return result

    case = Case(1, 7, 9, 2, 32, (7, 7), (3, 3))
    qkv, table, bias = make_inputs(case, torch.float16)
    out, lse = window_attention_fwd(qkv, table, bias, case.geometry())
    plan = triton_bwd.backward_plan(case.geometry(), torch.float16, has_qkv_bias=True)
    assert plan.buffers == triton_bwd.work_buffers(case.geometry(), torch.float16, has_qkv_bias=True)
    assert [b.name for b in plan.buffers] == ["rpb", "rpbt", "delta", "ds_part", "dbias_part", "dtable32", "dbias32"]
    with Allocations() as allocations:
        window_attention_bwd(torch.randn_like(out), qkv, table, bias, out, lse, case.geometry())
    for buffer in plan.buffers:
        assert (buffer.shape, buffer.dtype) in allocations.made, buffer.name
    assert plan.buffer("ds_part").nbytes == plan.num_splits * 2 * 49 * 49 * 4
