"""The real FIBER sizes build under torch.device("meta") (no data), with FIBER's parameter counts."""

from __future__ import annotations

import pytest
import timm
import torch
from fiber_kernels.modules import ImageToTextFusion, TextToImageFusion
from transformers import RobertaConfig, RobertaModel

from fiber_fast.models import FiberConfig, build_fiber


def _count(modules: list[torch.nn.Module]) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


@pytest.fixture(scope="module")
def backbones() -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's swin_base_patch4_window12_384 and HF roberta-base, on meta."""
    with torch.device("meta"):
        return (timm.create_model("swin_base_patch4_window12_384", pretrained=False),
                RobertaModel(RobertaConfig(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)))


@pytest.mark.parametrize("name, eager", [("base-coarse", False), ("base-coarse", True), ("base-fine", False)])
def test_base_builds_on_meta(backbones: tuple[torch.nn.Module, torch.nn.Module], name: str, eager: bool) -> None:
    swin_b, roberta = backbones
    with torch.device("meta"):
        model = build_fiber(FiberConfig.preset(name), eager=eager)
    assert all(p.device.type == "meta" for p in model.parameters())
    fusion = _count([m for m in model.modules() if isinstance(m, (ImageToTextFusion, TextToImageFusion))])
    image, text = _count([model.image]), _count([model.text])
    print(f"{name} eager={eager}: total {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M, fusion "
          f"{fusion / 1e6:.3f} M, image {image / 1e6:.3f} M, text {text / 1e6:.3f} M")
    # FIBER: 4 stage-3 (512-d) + 2 stage-4 (1024-d) image->text branches and 4 + 2 text->image branches,
    # counted from the layer shapes of swin_transformer.py / roberta.py in microsoft/FIBER.
    i2t = sum(768 * 2 * c + 2 * c + 2 * (c * c + c) + 1 + 2 * c for c in (512,) * 4 + (1024,) * 2)
    t2i = sum(2 * (768 * 768 + 768) + 2 * (c * 768 + 768) + 2 * 768 + 1 for c in (512,) * 4 + (1024,) * 2)
    assert fusion == i2t + t2i and 25.9e6 < fusion < 26.1e6
    # Without fusion: timm's Swin-B minus its classifier (plus the fine stage's per-stage LayerNorms) and
    # roberta-base minus its pooler.
    feature_norms = 2 * (256 + 512 + 1024) if name == "base-fine" else 0
    assert image - i2t == _count([swin_b]) - _count([swin_b.head]) + feature_norms
    assert text - t2i == _count([roberta]) - _count([roberta.pooler])
