"""Warp shuffles, votes and wmma tiles against PyTorch."""

import pytest
import torch


def shfl_down_sum(v: torch.Tensor) -> torch.Tensor:
    """Per lane, the shfl_down tree of warp_sum: a lane whose source is past the warp keeps its value."""
    d = v.clone()
    for offset in (16, 8, 4, 2, 1):
        shifted = d.clone()
        shifted[:, : 32 - offset] = d[:, offset:]
        d = d + shifted
    return d


def test_shuffles_and_votes(emu_test):
    x = torch.randint(-10, 11, (128,), dtype=torch.int32)
    out = emu_test.warp_ops(x, 64, seed=1)
    v = x.view(-1, 32).long()
    lanes = torch.arange(32)
    ballot = ((v > 0).long() << lanes).sum(1, keepdim=True)
    ballot = torch.where(ballot >= 2**31, ballot - 2**32, ballot)  # as int32 bits
    group = v.view(-1, 4, 8).sum(2, keepdim=True).expand(-1, 4, 8).reshape(-1, 32)
    expected = torch.stack([
        v.sum(1, keepdim=True).expand(-1, 32),
        shfl_down_sum(v),
        v.cumsum(1),
        v[:, 3:4].expand(-1, 32),
        ballot.expand(-1, 32),
        (v > 5).any(1, keepdim=True).long().expand(-1, 32),
        (v > -100).all(1, keepdim=True).long().expand(-1, 32),
        group,
    ], dim=-1).reshape(-1, 8).int()
    assert torch.equal(out, expected)


@pytest.mark.parametrize("b_col_major", [False, True])
@pytest.mark.parametrize("d_col_major", [False, True])
def test_wmma_tile_matches_fp32_matmul(emu_test, b_col_major, d_col_major):
    tiles = 3
    a = torch.randn(tiles, 16, 16).half()
    b = torch.randn(tiles, 16, 16).half()
    c = torch.randn(tiles, 16, 16)
    d = emu_test.wmma_tile(a, b, c, b_col_major, d_col_major, seed=2)
    b_math = b.transpose(1, 2) if b_col_major else b  # a column-major B is stored as B^T row-major
    expected = a.float() @ b_math.float() + c         # fp16 products are exact in fp32
    if d_col_major:
        d = d.transpose(1, 2)
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-5)
