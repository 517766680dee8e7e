"""Regression tests of issue 11 for window attention (each names its item): qkv_bias strides on the Triton
path (1), autocast (2), bf16 declined under the interpreter (3), a NaN in the bias reaching only padded
tokens (9), and the argument checks of the op and of FusedSwinAttention (10)."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels import BackendNotSupportedError
from fiber_kernels.modules import FusedSwinAttention
from fiber_kernels.window_attention import window_attention, window_attention_reference

HEADS, HEAD_DIM, WINDOW, SHIFT = 1, 16, (4, 4), (2, 2)
C = HEADS * HEAD_DIM


def _run(fn, qkv, table, bias_leaf, bias_view):
    """Output and gradients of qkv, table and the bias leaf (the bias view is ``bias_view(leaf)``)."""
    qkv, table = qkv.clone().requires_grad_(), table.clone().requires_grad_()
    leaf = bias_leaf.clone().requires_grad_()
    out = fn(qkv, table, bias_view(leaf))
    out.backward(torch.ones_like(out))
    return out.detach(), qkv.grad, table.grad, leaf.grad


def _reference(qkv, table, bias):
    return window_attention_reference(qkv, table, HEADS, WINDOW, SHIFT, HEAD_DIM ** -0.5, bias, -100.0, False)


def _triton(qkv, table, bias):
    return window_attention(qkv, table, HEADS, WINDOW, SHIFT, qkv_bias=bias, backend="triton")


@pytest.mark.parametrize("layout", ["strided", "expanded"])
def test_item1_triton_reads_qkv_bias_through_its_strides(layout):
    """Item 1: a strided qkv_bias was read as contiguous (wrong values for padded tokens, wrong gradient); an
    expanded one read past its storage. The 5x6 map pads to 8x8, so padded tokens hold the bias."""
    qkv, table = torch.randn(1, 5, 6, 3 * C), torch.randn(49, HEADS)
    leaf = torch.randn(6 * C) if layout == "strided" else torch.randn(1)
    view = (lambda t: t[::2]) if layout == "strided" else (lambda t: t.expand(3 * C))
    got = _run(_triton, qkv, table, leaf, view)
    want = _run(_reference, qkv, table, leaf, view)
    for name, g, w in zip(("out", "dqkv", "dtable", "dbias"), got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_item9_nan_in_the_value_bias_stays_in_windows_with_padded_tokens():
    """Item 9: lanes past the window held the bias and were multiplied by 0, so a NaN in its value part made
    every Triton output NaN. Now the NaN pattern is the reference's: channel 3 (the bias's NaN value channel)
    of exactly the windows that hold padded tokens (the 6x6 map pads to 8x8, window 4, no shift: 3 of 4)."""
    qkv, table = torch.randn(1, 6, 6, 3 * C), torch.randn(49, HEADS)
    bias = torch.randn(3 * C)
    bias[2 * C + 3] = float("nan")
    got = window_attention(qkv, table, HEADS, WINDOW, 0, qkv_bias=bias, backend="triton")
    want = window_attention_reference(qkv, table, HEADS, WINDOW, (0, 0), HEAD_DIM ** -0.5, bias, -100.0, False)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.isfinite(got[:, :4, :4]).all() and torch.isfinite(got[..., :3]).all()
    assert torch.isnan(got[:, 4:, :, 3]).all() and torch.isnan(got[:, :4, 4:, 3]).all()  # v channel 3 holds it
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], atol=1e-5, rtol=1e-5)


def test_item9_nan_in_the_bias_is_harmless_without_padding():
    """Item 9: no padded token (8x8 map, window 4): the bias is never read, forward and backward stay finite."""
    qkv = torch.randn(1, 8, 8, 3 * C, requires_grad=True)
    table = torch.randn(49, HEADS)
    bias = torch.full((3 * C,), float("nan"))
    out = window_attention(qkv, table, HEADS, WINDOW, SHIFT, qkv_bias=bias, backend="triton")
    out.sum().backward()
    want = window_attention_reference(qkv.detach(), table, HEADS, WINDOW, SHIFT, HEAD_DIM ** -0.5, None, -100.0, False)
    torch.testing.assert_close(out.detach(), want, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(qkv.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_item2_window_attention_and_fused_swin_follow_autocast(dtype):
    """Item 2: inside autocast the op runs in the region's dtype (qkv, table and bias cast), equal bit for bit
    to the op on cast inputs; FusedSwinAttention trains under autocast with fp32 parameter gradients."""
    qkv, table, bias = torch.randn(1, 5, 6, 3 * C), torch.randn(49, HEADS), torch.randn(3 * C)
    with torch.autocast("cpu", dtype=dtype):
        got = window_attention(qkv, table, HEADS, WINDOW, SHIFT, qkv_bias=bias, backend="torch")
    want = window_attention(qkv.to(dtype), table.to(dtype), HEADS, WINDOW, SHIFT, qkv_bias=bias.to(dtype),
                            backend="torch")
    assert got.dtype == dtype and torch.equal(got, want)
    if dtype == torch.float16:  # the Triton custom op too (bf16 is declined under the interpreter: item 3)
        with torch.autocast("cpu", dtype=dtype):
            got = window_attention(qkv, table, HEADS, WINDOW, SHIFT, qkv_bias=bias, backend="triton")
        want = window_attention(qkv.to(dtype), table.to(dtype), HEADS, WINDOW, SHIFT, qkv_bias=bias.to(dtype),
                                backend="triton")
        assert got.dtype == dtype and torch.equal(got, want)
    module = FusedSwinAttention(C, HEADS, WINDOW, SHIFT)
    x = torch.randn(1, 5, 6, C, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        out = module(x)
    out.float().sum().backward()
    assert out.dtype == dtype and x.grad.dtype == torch.float32
    assert module.relative_position_bias_table.grad.dtype == torch.float32
    assert torch.isfinite(module.qkv.weight.grad).all()


def test_item3_triton_declines_bf16_under_the_interpreter():
    """Item 3: the interpreter's bf16 tl.dot returns garbage; the Triton backend declines with a reason."""
    qkv, table = torch.randn(1, 4, 4, 3 * C, dtype=torch.bfloat16), torch.randn(49, HEADS, dtype=torch.bfloat16)
    with pytest.raises(BackendNotSupportedError, match="bfloat16 under TRITON_INTERPRET=1"):
        window_attention(qkv, table, HEADS, WINDOW, 0, backend="triton")


def test_item10_fused_swin_keeps_or_rejects_what_it_is_given():
    """Item 10: qk_scale=0.0 silently became the default and window_size=7.5 became 7."""
    with pytest.raises(ValueError, match="qk_scale must be a finite float > 0, got 0.0"):
        FusedSwinAttention(32, 2, 7, qk_scale=0.0)
    assert FusedSwinAttention(32, 2, 7, qk_scale=0.05).scale == 0.05
    with pytest.raises(TypeError, match=r"window_size must be an int or a pair of ints \(h, w\), got 7.5"):
        FusedSwinAttention(32, 2, 7.5)
    with pytest.raises(TypeError, match=r"shift_size must be an int or a pair of ints"):
        FusedSwinAttention(32, 2, 7, (3.0, 3))
    with pytest.raises(ValueError, match="num_heads must be an int >= 1, got 0"):
        FusedSwinAttention(32, 0, 7)


@pytest.mark.parametrize("change,message", [
    ({"num_heads": 0}, "num_heads must be an int >= 1, got 0"),
    ({"mask_value": float("nan")}, "mask_value must be a finite float, got nan"),
    ({"window_size": (4, 4, 4)}, r"window_size must be an int or a pair of ints \(h, w\), got 3 values"),
])
def test_item10_value_errors_are_value_errors(change, message):
    """Item 10: these bad *values* raised TypeError."""
    args = {"num_heads": HEADS, "window_size": WINDOW, "mask_value": -100.0}
    args.update(change)
    qkv, table = torch.randn(1, 4, 4, 3 * C), torch.randn(49, HEADS)
    with pytest.raises(ValueError, match=message):
        window_attention(qkv, table, args["num_heads"], args["window_size"], 0, mask_value=args["mask_value"])


def test_item7_cuda_launchers_reject_tensors_on_another_device(ops):
    """Item 7: the launcher reads every pointer it gets: a bias on another device (meta, through the pybind
    binding the dispatcher cannot reroute) and a non-finite mask_value must raise, not run."""
    qkv, table = torch.randn(1, 4, 4, 3 * C), torch.randn(49, HEADS)
    with pytest.raises(RuntimeError, match="window_attention_fwd: qkv_bias must be on cpu"):
        ops.window_attention_fwd(qkv, table, torch.zeros(3 * C, device="meta"), HEADS, 4, 4, 0, 0, 0.25,
                                 -100.0, False, seed=0)
    with pytest.raises(RuntimeError, match="window_attention_fwd: mask_value must be finite"):
        ops.window_attention_fwd(qkv, table, None, HEADS, 4, 4, 0, 0, 0.25, float("inf"), False, seed=0)
