"""Bounds-checked global and shared memory: off-by-one reads are reported, in-bounds ones work."""

import pytest
import torch


def test_global_read_in_bounds(emu_test):
    x = torch.randn(200)
    assert torch.equal(emu_test.shifted_read(x, 0, False), x)


@pytest.mark.parametrize(("shift", "element"), [(1, 200), (-1, -1)])
def test_global_off_by_one_is_reported(emu_test, shift, element):
    x = torch.randn(200)
    pattern = (rf"out-of-bounds access at element {element} .* of global buffer 'x' with 200 elements of 4 bytes, "
               r"by thread \(\d+,0,0\) of block \(\d+,0,0\)")
    with pytest.raises(RuntimeError, match=pattern):
        emu_test.shifted_read(x, shift, False)


def test_bounds_are_the_view_not_the_storage(emu_test):
    # x is the first 100 elements of a larger storage: reading x[100] is a bug even though the
    # memory exists, and the emulator must say so.
    base = torch.randn(300)
    with pytest.raises(RuntimeError, match=r"element 100 .* global buffer 'x' with 100 elements"):
        emu_test.shifted_read(base[:100], 1, False)


def test_shared_read_in_bounds(emu_test):
    x = torch.randn(128)
    assert torch.equal(emu_test.shifted_read(x, 0, True), x)


def test_shared_off_by_one_is_reported(emu_test):
    x = torch.randn(128)
    pattern = (r"out-of-bounds access at element 64 .* of shared buffer 'tile' with 64 elements of 4 bytes, "
               r"by thread \(63,0,0\)")
    with pytest.raises(RuntimeError, match=pattern):
        emu_test.shifted_read(x, 1, True)


def test_wrong_dtype_or_device_is_refused(emu_test):
    with pytest.raises(RuntimeError, match="tensor '(x|out)' has dtype Double, the kernel reads it as Float"):
        emu_test.shifted_read(torch.randn(64, dtype=torch.float64), 0, False)
    with pytest.raises(RuntimeError, match="tensor '(x|out)' must be on the CPU, got meta"):
        emu_test.shifted_read(torch.empty(64, device="meta"), 0, False)
