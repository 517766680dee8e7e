"""Scaffolding shared by the ATSS tests: the exact comparison of two assignments and the emulation binding
(case lists and box generators live in ``_cases.py``)."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.testing import emu


def assert_same(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Equal box indices and bit-identical IoUs, naming the first anchors that differ."""
    matched, iou = got
    assert matched.dtype == torch.int64 and iou.dtype == torch.float32
    assert matched.shape == want[0].shape and iou.shape == want[1].shape
    differ = (matched != want[0]).nonzero()
    first = tuple(differ[:5].t())
    assert differ.numel() == 0, (f"{differ.shape[0]} anchors matched differently, first at {differ[:5].tolist()}: "
                                 f"got {matched[first].tolist()}, want {want[0][first].tolist()}")
    # exact arithmetic: the same fp32 IoU bit patterns, not merely close
    assert torch.equal(iou.view(torch.int32), want[1].view(torch.int32)), (iou - want[1]).abs().max()


@pytest.fixture(scope="session")
def atss_emu() -> emu.EmuModule:
    """The test binding csrc/atss/atss_emu.cpp (about a minute to build the first time, then cached)."""
    return emu.build("atss", ["csrc/atss/atss_emu.cpp"])
