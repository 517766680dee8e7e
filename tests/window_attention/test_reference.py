"""The eager oracle against Swin's own code paths (timm / torchvision blocks), and the SDPA CPU
path (the ``torch`` backend) against the oracle, forward and gradients."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.window_attention import window_attention, window_attention_reference
from fiber_kernels.window_attention.reference import relative_position_index, shift_attention_mask

from ._cases import Case, make_inputs


def test_relative_position_index_matches_swin_formula() -> None:
    index = relative_position_index(3, 4)
    # query (0, 0) vs key (2, 3): dy = -2 -> row 0 of 5, dx = -3 -> col 0 of 7
    assert index[0, 11] == 0
    assert index[11, 0] == (2 + 2) * 7 + (3 + 3)
    assert index.diagonal().unique().tolist() == [2 * 7 + 3]


def test_shift_mask_regions_match_swin_slices() -> None:
    mask = shift_attention_mask(14, 14, (7, 7), (3, 3))
    assert mask.shape == (4, 49, 49)
    assert (mask[0] == 0).all()  # top-left window holds one region
    # bottom-right window: rows 7..13 split at 11, cols too -> 4 regions of 4x4, 4x3, 3x4, 3x3 tokens
    counts = sorted(int(n) for n in (mask[3] == 0).sum(1).unique())
    assert counts == [9, 12, 16]
    assert set(mask.unique().tolist()) == {0.0, -100.0}


@pytest.mark.parametrize("case", [Case(2, 10, 12, 3, 32, (7, 7), (3, 3)), Case(1, 12, 12, 4, 32, (12, 12), (0, 0)),
                                  Case(1, 10, 12, 3, 32, (7, 7), (3, 3), shift_first=True),
                                  Case(1, 5, 8, 3, 32, (4, 6), (2, 0), bias=False)], ids=str)
def test_sdpa_path_matches_reference(case: Case) -> None:
    qkv, table, bias = make_inputs(case, torch.float64)
    leaves = [t.requires_grad_() for t in (qkv, table, bias) if t is not None]
    scale = case.head_dim ** -0.5
    ref = window_attention_reference(qkv, table, case.heads, case.window, case.shift, scale, bias, -100.0,
                                     case.shift_first)
    out = window_attention(qkv.float(), table.float(), case.heads, case.window, case.shift,
                           qkv_bias=None if bias is None else bias.float(), shift_first=case.shift_first,
                           backend="torch")
    grad = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, leaves, grad)
    got = torch.autograd.grad(out, leaves, grad.float())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-4)


def test_reference_matches_torchvision_shifted_window_attention() -> None:
    swin = pytest.importorskip("torchvision.models.swin_transformer", reason="torchvision is not installed")
    torch.manual_seed(0)
    attn = swin.ShiftedWindowAttention(96, [7, 7], [3, 3], 3).double()
    x = torch.randn(2, 10, 12, 96, dtype=torch.float64)
    expected = attn(x)
    qkv = torch.nn.functional.linear(x, attn.qkv.weight, attn.qkv.bias)
    out = window_attention_reference(qkv, attn.relative_position_bias_table, 3, (7, 7), (3, 3), 32 ** -0.5,
                                     attn.qkv.bias)
    torch.testing.assert_close(attn.proj(out), expected, rtol=1e-10, atol=1e-10)
