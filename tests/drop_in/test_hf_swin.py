"""``patch_hf_swin`` against transformers' own Swin and Donut Swin: outputs, gradients, state dict, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from ._compare import assert_low_precision_close, max_diffs, randomize, require, saved_and_loaded

pytestmark = pytest.mark.drop_in
transformers = require("transformers", "transformers", "pip install 'transformers>=5.0'")

from fiber_kernels.patch import hf_swin_patched_layers, patch_hf_swin  # noqa: E402

# Patch 4, embed 32, heads (2, 4): head dim 16 (the Triton kernels take 16/32/64/128), window 4.
SMALL = {"image_size": 64, "patch_size": 4, "embed_dim": 32, "depths": [2, 2], "num_heads": [2, 4],
         "window_size": 4, "drop_path_rate": 0.0}


def _classifier() -> torch.nn.Module:
    config = transformers.SwinConfig(num_labels=5, **SMALL)
    return randomize(transformers.SwinForImageClassification(config)).eval()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.slow)])
@pytest.mark.parametrize("size", [(44, 60), (64, 64)])
def test_classifier_outputs_and_gradients_equal_unpatched(backend: str, size: tuple[int, int]) -> None:
    # 44x60 pixels: 11x15 tokens, HF pads to 12x16 (padded tokens hold the qkv bias), then 6x8.
    model = _classifier()
    patched = patch_hf_swin(copy.deepcopy(model), backend=backend)
    assert hf_swin_patched_layers(patched) == [f"swin.encoder.layers.{s}.blocks.{b}" for s in (0, 1) for b in (0, 1)]
    pixels = torch.randn(2, 3, *size)
    out_diff, grad_diff = max_diffs(model, patched, lambda m: m(pixels).logits)
    assert out_diff < 1e-4 and grad_diff < 1e-4, (out_diff, grad_diff)


def test_state_dict_and_parameters_are_unchanged() -> None:
    model = _classifier()
    keys, params = list(model.state_dict()), [id(p) for p in model.parameters()]
    patch_hf_swin(model)
    assert list(model.state_dict()) == keys
    assert [id(p) for p in model.parameters()] == params
    reloaded = patch_hf_swin(_classifier())
    assert not reloaded.load_state_dict(model.state_dict()).missing_keys


def test_backbone_feature_maps_equal_unpatched() -> None:
    config = transformers.SwinConfig(out_features=["stage1", "stage2"], **SMALL)
    model = randomize(transformers.SwinBackbone(config)).eval()
    patched = patch_hf_swin(copy.deepcopy(model), backend="torch")
    pixels = torch.randn(1, 3, 52, 36)
    for ref, got in zip(model(pixels).feature_maps, patched(pixels).feature_maps, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_donut_swin_outputs_and_gradients_equal_unpatched() -> None:
    config = transformers.DonutSwinConfig(**SMALL)
    model = randomize(transformers.DonutSwinModel(config)).eval()
    patched = patch_hf_swin(copy.deepcopy(model), backend="torch")
    assert len(hf_swin_patched_layers(patched)) == 4
    pixels = torch.randn(2, 3, 44, 60)
    out_diff, grad_diff = max_diffs(model, patched, lambda m: m(pixels).last_hidden_state)
    assert out_diff < 1e-4 and grad_diff < 1e-4, (out_diff, grad_diff)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="no HF SwinLayer / DonutSwinLayer found in Linear"):
        patch_hf_swin(torch.nn.Linear(2, 2))
    dropped = transformers.SwinModel(transformers.SwinConfig(attention_probs_dropout_prob=0.1, **SMALL))
    with pytest.raises(ValueError, match="attention dropout 0.1 is not fused"):
        patch_hf_swin(dropped)
    patched = patch_hf_swin(_classifier())
    never_formed = "^output_attentions=True: the fused window attention never forms the attention weights"
    with pytest.raises(ValueError, match=never_formed):
        patched(torch.randn(1, 3, 64, 64), output_attentions=True)
    donut = patch_hf_swin(transformers.DonutSwinModel(transformers.DonutSwinConfig(**SMALL)))
    with pytest.raises(ValueError, match=never_formed):
        donut(torch.randn(1, 3, 64, 64), output_attentions=True)
    # 8x8 pixels = 2x2 tokens < window 4: HF shrinks the window below its bias table (and fails itself).
    with pytest.raises(RuntimeError):
        _classifier()(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="clamped its window to 2 tokens, but its relative position table is for 4x4"):
        patched(torch.randn(1, 3, 8, 8))


def test_hf_swin_v2_is_refused_with_the_reason() -> None:
    config = transformers.Swinv2Config(image_size=32, patch_size=4, embed_dim=32, depths=[2], num_heads=[2],
                                       window_size=4)
    refusal = "Swinv2Model is an HF Swin V2: its scaled cosine attention .* run it unpatched$"
    with pytest.raises(ValueError, match=refusal):
        patch_hf_swin(transformers.Swinv2Model(config))


def test_patched_model_pickles_and_deep_copies() -> None:
    model = patch_hf_swin(_classifier(), backend="torch")
    pixels = torch.randn(1, 3, 44, 60)
    for copied in (saved_and_loaded(model), copy.deepcopy(model)):
        assert hf_swin_patched_layers(copied) == hf_swin_patched_layers(model)
        assert copied.swin.encoder.layers[0].blocks[0].fused_backend == "torch"
        torch.testing.assert_close(copied(pixels).logits, model(pixels).logits, rtol=0, atol=0)


def test_bfloat16_patched_model_is_as_close_as_unpatched() -> None:
    model = _classifier()
    pixels = torch.randn(2, 3, 44, 60)
    assert_low_precision_close(model, patch_hf_swin(copy.deepcopy(model), backend="torch"),
                               lambda m: m(pixels.to(next(m.parameters()).dtype)).logits)
