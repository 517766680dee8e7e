"""Atomics from many blocks, fp16/bf16 conversions and arithmetic, and math intrinsics."""

import math

import torch


def test_atomics_from_many_blocks(emu_test):
    x = torch.randint(-50, 51, (1000,), dtype=torch.int32)
    fsum, dsum, hist, extrema, ticket, owner, fmax = emu_test.atomics(x, 7, 8, 64, seed=4)
    assert fsum.item() == x.sum().item()  # small integers: exact in fp32 in any order
    assert dsum.item() == x.sum().item()
    assert torch.equal(hist, torch.bincount((x.long() % 7), minlength=7).int())
    assert extrema.tolist() == [x.max().item(), x.min().item()]
    assert ticket.item() == x.numel()
    # atomicAdd returns the old value: the tickets are unique, so every element got one slot
    assert torch.equal(owner.sort().values, torch.arange(x.numel(), dtype=torch.int32))
    assert fmax.item() == 0.5 * x.max().item()


def special_floats() -> torch.Tensor:
    """Round-to-nearest-even edge cases for fp16 and bf16, and a spread of ordinary values."""
    ties = [1 + 2**-11, 1 + 3 * 2**-11, 2**-25, 3 * 2**-25, 2**-24 + 2**-25, 1 + 2**-8, 1 + 3 * 2**-8]
    edges = [65504.0, 65519.0, 65520.0, 1e6, 2**-14, 2**-14 - 2**-25, 1e-9, 0.0, -0.0, math.inf, -math.inf,
             3.4e38, -3.4e38, 1.1754944e-38, 1e-40]
    values = torch.tensor(ties + edges + [-t for t in ties], dtype=torch.float32)
    spread = torch.randn(2000) * torch.logspace(-10, 6, 2000)
    return torch.cat([values, spread])


def test_fp16_bf16_conversions_round_to_nearest_even(emu_test):
    x = special_floats()
    h, bf, h_back, bf_back = emu_test.convert(x)
    assert torch.equal(h.view(torch.int16), x.half().view(torch.int16))
    assert torch.equal(bf.view(torch.int16), x.bfloat16().view(torch.int16))
    assert torch.equal(h_back, x.half().float())
    assert torch.equal(bf_back, x.bfloat16().float())


def test_nan_converts_to_cuda_canonical_nan(emu_test):
    h, bf, _, _ = emu_test.convert(torch.tensor([math.nan, -math.nan]))
    assert h.view(torch.int16).tolist() == [0x7FFF, 0x7FFF]  # what cuda_fp16's __float2half returns
    assert bf.view(torch.int16).tolist() == [0x7FFF, 0x7FFF]


def test_half_arithmetic_is_correctly_rounded(emu_test):
    a = (torch.randn(4096) * 8).half()
    b = (torch.randn(4096) * 8).half()
    b = torch.where(b == 0, torch.ones_like(b), b)
    out = emu_test.half_math(a, b)
    for column, expected in enumerate([a + b, a - b, a * b, a / b]):
        assert torch.equal(out[:, column], expected), f"column {column}"
    fma = (a.double() * b.double() + a.double()).half()
    torch.testing.assert_close(out[:, 4], fma, rtol=1e-3, atol=1e-3)


def test_math_intrinsics(emu_test):
    x = torch.linspace(-6, 6, 301)
    out = emu_test.math(x)
    expected = torch.stack([x.exp(), (x.abs() + 1).rsqrt(), x / 3, x.clamp_min(0), x.clamp(0, 1), x.tanh()], dim=1)
    torch.testing.assert_close(out, expected, rtol=2e-6, atol=1e-6)

