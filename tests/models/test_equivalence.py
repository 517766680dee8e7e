"""The fused model equals FIBER's eager computation (outputs and every parameter gradient), within the
flash-attention rule against an fp64 run of the eager model."""

from __future__ import annotations

import pytest
import torch

from fiber_fast.models import FiberConfig, FiberModel

from ._helpers import assert_fused_matches_eager, inputs, pair, tiny

Models = tuple[FiberConfig, FiberModel, FiberModel, FiberModel]  # config, fused, eager, eager fp64


@pytest.fixture(scope="module")
def coarse() -> Models:
    cfg = tiny()
    return (cfg, *pair(cfg))


@pytest.fixture(scope="module")
def fine() -> Models:
    cfg = tiny(stage="fine")
    return (cfg, *pair(cfg))


@pytest.mark.parametrize("fusion", [True, False])
def test_coarse_square(coarse: Models, fusion: bool) -> None:
    cfg, *models = coarse
    assert_fused_matches_eager(cfg, fusion, tuple(models), batch=2, height=64, width=64, tokens=9)


def test_coarse_odd_size(coarse: Models) -> None:
    # 45 x 83: patch padding (12 x 21 tokens), window padding and odd PatchMerging sizes in every stage
    cfg, *models = coarse
    assert_fused_matches_eager(cfg, True, tuple(models), batch=3, height=45, width=83, tokens=7)


def test_fine_with_grounding_head(fine: Models) -> None:
    cfg, *models = fine
    assert_fused_matches_eager(cfg, True, tuple(models), batch=2, height=72, width=100, tokens=8)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (45, 83)])
def test_fine_fusion_off_and_sizes(fine: Models, size: tuple[int, int]) -> None:
    cfg, *models = fine
    for fusion in (True, False):
        assert_fused_matches_eager(cfg, fusion, tuple(models), batch=2, height=size[0], width=size[1], tokens=6)


@pytest.mark.slow
def test_coarse_odd_size_fusion_off(coarse: Models) -> None:
    cfg, *models = coarse
    assert_fused_matches_eager(cfg, False, tuple(models), batch=3, height=45, width=83, tokens=7)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", [True, False])
def test_mid_size_real_head_dims(fusion: bool) -> None:
    """Swin head dim 32 and RoBERTa head dim 64 (FIBER's), window 7, 5 fused layers across stages 3-4."""
    cfg = FiberConfig.preset("tiny", image={"img_size": 224, "embed_dim": 64, "depths": (2, 2, 6, 2),
                                            "num_heads": (2, 4, 8, 16), "window_size": 7},
                             text={"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 4,
                                   "intermediate_size": 512}, fusion_layers=5)
    assert_fused_matches_eager(cfg, fusion, batch=2, height=224, width=200, tokens=12)


def test_triton_interpreter_whole_model() -> None:
    """The Triton kernels (window attention, cross-attention, gated linear) under TRITON_INTERPRET=1,
    forward of the whole fused model against the eager model (fp32; the kernels' own tests cover the
    interpreter's gradients, the slow test below the model's)."""
    cfg = tiny(backend="triton", image={"depths": (2, 2, 2, 2)}, text={"num_hidden_layers": 3})
    fused, eager, _ = pair(cfg)
    pixels, ids, mask = inputs(cfg, batch=2, height=32, width=28, tokens=5)
    with torch.no_grad():
        got, want = fused(pixels, ids, mask), eager(pixels, ids, mask)
    for name in ("image_tokens", "text_tokens"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_triton_interpreter_gradients() -> None:
    cfg = tiny(backend="triton", image={"depths": (2, 2, 2, 2)}, text={"num_hidden_layers": 3})
    assert_fused_matches_eager(cfg, True, batch=1, height=32, width=32, tokens=5)
