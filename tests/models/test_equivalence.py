"""The fused model equals FIBER's eager computation (outputs and every parameter gradient)."""

from __future__ import annotations

import pytest

from ._helpers import assert_fused_matches_eager, tiny


@pytest.mark.parametrize("fusion", [True, False])
def test_tiny_coarse_square(fusion: bool) -> None:
    assert_fused_matches_eager(tiny(), fusion, batch=2, height=64, width=64, tokens=9)


@pytest.mark.parametrize("fusion", [True, False])
def test_tiny_coarse_odd_size(fusion: bool) -> None:
    # 57 x 83: patch padding (15 x 21 tokens), window padding and odd PatchMerging sizes in every stage
    assert_fused_matches_eager(tiny(), fusion, batch=2, height=57, width=83, tokens=7)


@pytest.mark.parametrize("fusion", [True, False])
def test_tiny_fine_with_grounding_head(fusion: bool) -> None:
    assert_fused_matches_eager(tiny(stage="fine"), fusion, batch=2, height=72, width=100, tokens=8)
