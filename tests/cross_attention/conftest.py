"""Scaffolding shared by the cross-attention tests: the emulation binding of the csrc/ kernels (input builders
live in ``_cases.py``)."""

from __future__ import annotations

import pytest
from fiber_kernels.testing import emu


@pytest.fixture(scope="session")
def ops() -> emu.EmuModule:
    """The test binding of csrc/cross_attention/cross_attention_emu.cpp (built once, then cached)."""
    return emu.build("cross_attention", ["csrc/cross_attention/cross_attention_emu.cpp"])
