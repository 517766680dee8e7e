"""The model API the trainer and evaluators use: lower/upper split, fusion switch, heads, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fiber_kernels.modules import ImageToTextFusion, TextToImageFusion

from fiber_fast.models import FiberConfig, FiberModel, build_fiber

from ._helpers import inputs, open_gates, tiny


@pytest.fixture(scope="module")
def model() -> FiberModel:
    built = build_fiber(tiny())
    open_gates(built)
    return built.eval()


def _count_fusion_calls(model: FiberModel) -> tuple[dict[str, int], list[torch.utils.hooks.RemovableHandle]]:
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (ImageToTextFusion, TextToImageFusion)):
            calls[name] = 0

            def hook(_module: object, _args: object, name: str = name) -> None:
                calls[name] += 1
            handles.append(module.register_forward_pre_hook(hook))
    return calls, handles


def test_fusion_switch_calls(model: FiberModel) -> None:
    cfg = model.config
    calls, handles = _count_fusion_calls(model)
    assert len(calls) == 2 * cfg.fusion_layers
    pixels, ids, mask = inputs(cfg)
    with torch.no_grad():
        model(pixels, ids, mask, fusion=False)
        assert set(calls.values()) == {0}
        model(pixels, ids, mask, fusion=True)
        assert set(calls.values()) == {1}
    for handle in handles:
        handle.remove()


def test_fusion_changes_only_the_fused_pass(model: FiberModel) -> None:
    pixels, ids, mask = inputs(model.config)
    with torch.no_grad():
        fused = model(pixels, ids, mask, fusion=True)
        dual = model(pixels, ids, mask, fusion=False)
        # the dual encoder's image side depends on the image only
        other_text = model(pixels, ids.flip(0), mask.flip(0), fusion=False)
        fused_other_text = model(pixels, ids.flip(0), mask.flip(0), fusion=True)
    assert not torch.allclose(fused.text_tokens, dual.text_tokens, atol=1e-3)
    torch.testing.assert_close(other_text.image_tokens, dual.image_tokens)
    assert not torch.allclose(fused_other_text.image_tokens, fused.image_tokens, atol=1e-3)


def test_lower_states_reused_by_select(model: FiberModel) -> None:
    """ITM-style pairing: upper(img.select(i), txt.select(j)) equals a full pass on the re-paired inputs."""
    pixels, ids, mask = inputs(model.config, batch=3, height=40, width=56, tokens=7)
    image_index, text_index = torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 2, 1, 2, 1])
    with torch.no_grad():
        image, text = model.image_lower(pixels), model.text_lower(ids, mask)
        paired = model.upper(image.select(image_index), text.select(text_index), fusion=True)
        direct = model(pixels[image_index], ids[text_index], mask[text_index], fusion=True)
    for name in ("image_tokens", "text_tokens", "image_embeds", "text_embeds"):
        torch.testing.assert_close(getattr(paired, name), getattr(direct, name), atol=1e-5, rtol=1e-5)
    for got, want in zip(paired.image_features, direct.image_features, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert model.itm_head(paired).shape == (5, 2)


def test_output_shapes_and_heads(model: FiberModel) -> None:
    cfg = model.config
    pixels, ids, mask = inputs(cfg, batch=2, height=50, width=70, tokens=6)
    with torch.no_grad():
        out = model(pixels, ids, mask)
    dims = cfg.image.num_features
    grid = [(math.ceil(50 / 4), math.ceil(70 / 4))]
    for _ in range(3):
        grid.append(((grid[-1][0] + 1) // 2, (grid[-1][1] + 1) // 2))
    assert out.image_tokens.shape == (2, grid[3][0] * grid[3][1], dims[3])
    assert out.text_tokens.shape == (2, 6, cfg.text.hidden_size)
    assert out.image_embeds.shape == (2, dims[3]) and out.text_embeds.shape == (2, cfg.text.hidden_size)
    assert [tuple(f.shape) for f in out.image_features] == [(2, dims[s], *grid[s]) for s in (1, 2, 3)]
    assert torch.equal(out.text_attention_mask, mask)
    image_feat, text_feat, logit_scale = model.itc_head(out.image_embeds, out.text_embeds)
    torch.testing.assert_close(image_feat.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text_feat.norm(dim=-1), torch.ones(2))
    assert model.itc_head.temp.shape == (1,) and logit_scale.shape == (1,)
    torch.testing.assert_close(logit_scale, torch.tensor([1 / 0.07]))
    assert model.mlm_head(out.text_tokens).shape == (2, 6, cfg.text.vocab_size)
    assert model.mlm_head.decoder.weight is model.text.embeddings.word_embeddings.weight
    assert model.grounding_head is None


def test_temperature_clamped_in_value_not_gradient(model: FiberModel) -> None:
    head = model.itc_head
    with torch.no_grad():
        head.temp.fill_(5e-4)
    head.temp.grad = None
    _, _, logit_scale = head(torch.randn(2, head.image_transform.in_features), torch.randn(2, 64))
    logit_scale.sum().backward()
    torch.testing.assert_close(logit_scale, torch.tensor([1000.0]))
    assert head.temp.grad is not None and float(head.temp.grad) != 0.0
    with torch.no_grad():
        head.temp.fill_(0.07)


def _glip_anchors(stride: int, size: float, height: int, width: int) -> np.ndarray:
    """maskrcnn_benchmark's generate_anchors + grid_anchors for one aspect ratio and scale."""
    w = h = float(stride)
    x_ctr, y_ctr = 0.5 * (w - 1), 0.5 * (h - 1)
    ws = hs = size
    base = np.array([x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)])
    shift_y, shift_x = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
    shifts = np.stack([shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()], axis=1)
    return shifts + base


def test_grounding_head_outputs() -> None:
    cfg = tiny(stage="fine")
    assert cfg.detection_head and cfg.last_text_layer_norm
    model = build_fiber(cfg)
    pixels, ids, mask = inputs(cfg, batch=2, height=96, width=130, tokens=6)
    with torch.no_grad():
        grounding = model.grounding_head(model(pixels, ids, mask))
    sizes = [(12, 17), (6, 9), (3, 5), (2, 3), (1, 2)]  # P3-P5 from the Swin stages, P6/P7 stride-2 convs
    assert grounding.num_anchors_per_level == [h * w for h, w in sizes]
    expected = np.concatenate([_glip_anchors(8 * 2 ** i, 8 * 8 * 2 ** i, *hw) for i, hw in enumerate(sizes)])
    np.testing.assert_allclose(grounding.anchors.numpy(), expected)
    total = sum(grounding.num_anchors_per_level)
    assert grounding.cls_logits.shape == (2, total, 6)
    assert grounding.box_regression.shape == (2, total, 4) and grounding.centerness.shape == (2, total)
    # at initialisation the towers are N(0, 0.01) with zero bias: the logits sit near GLIP's prior bias
    prior = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
    assert abs(float(grounding.cls_logits.mean()) - prior) < 0.5


def test_eager_and_fused_state_dicts_match() -> None:
    cfg = tiny(stage="fine")
    fused, eager = build_fiber(cfg), build_fiber(cfg, eager=True)
    assert {k: v.shape for k, v in fused.state_dict().items()} == {k: v.shape for k, v in eager.state_dict().items()}
    eager.load_state_dict(fused.state_dict(), strict=True)


@pytest.mark.parametrize("name, pixels_shape, ids_shape, mask_dtype, error, match", [
    ("channels", (2, 1, 32, 32), (2, 5), torch.long, ValueError, "pixel_values"),
    ("integer image", (2, 3, 32, 32), (2, 5), torch.long, TypeError, "pixel_values"),
    ("too long", (2, 3, 32, 32), (2, 65), torch.long, ValueError, "input_ids.*position table"),
    ("batch", (3, 3, 32, 32), (2, 5), torch.long, ValueError, "pixel_values and input_ids"),
    ("mask dtype", (2, 3, 32, 32), (2, 5), torch.float32, TypeError, "attention_mask"),
])
def test_bad_inputs(model: FiberModel, name: str, pixels_shape: tuple[int, ...], ids_shape: tuple[int, int],
                    mask_dtype: torch.dtype, error: type[Exception], match: str) -> None:
    pixels = torch.randn(pixels_shape) if name != "integer image" else torch.zeros(pixels_shape, dtype=torch.uint8)
    ids = torch.ones(ids_shape, dtype=torch.long)
    with pytest.raises(error, match=match):
        model(pixels, ids, torch.ones(ids_shape, dtype=mask_dtype))


def test_bad_pairings(model: FiberModel) -> None:
    pixels, ids, mask = inputs(model.config, batch=2, height=32, width=32, tokens=5)
    with torch.no_grad():
        image, text = model.image_lower(pixels), model.text_lower(ids, mask)
    with pytest.raises(ValueError, match="same batch size"):
        model.upper(image.select(torch.tensor([0])), text)
    with pytest.raises(TypeError, match="index"):
        image.select(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="index values"):
        text.select(torch.tensor([2]))


def test_config_round_trip(tmp_path: object) -> None:
    cfg = FiberConfig.preset("base-fine", fusion_layers=4, text={"vocab_size": 1234})
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"cfg{suffix}"
        cfg.save(path)
        assert FiberConfig.load(path) == cfg
    assert FiberConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.image.img_size == (800, 1333) and cfg.max_text_len == 256 and cfg.detection_head


@pytest.mark.parametrize("overrides, match", [
    ({"stage": "medium"}, "stage"), ({"fusion_layers": 7}, "fusion_layers"), ({"backend": "cpu"}, "backend"),
    ({"max_text_len": 100}, "max_text_len"), ({"bogus": 1}, "bogus"),
])
def test_bad_config(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FiberConfig.preset("tiny", **overrides)


def test_dual_encoder_costs_the_two_backbones() -> None:
    """fusion=False counts the FLOPs of timm's Swin (forward_features) plus HF's RobertaModel, no more."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import RobertaConfig, RobertaModel

    cfg = tiny()
    image, text = cfg.image, cfg.text
    swin = timm.models.swin_transformer.SwinTransformer(
        img_size=image.img_size, patch_size=image.patch_size, embed_dim=image.embed_dim, depths=image.depths,
        num_heads=image.num_heads, window_size=image.window_size, num_classes=0)
    roberta = RobertaModel(RobertaConfig(vocab_size=text.vocab_size, hidden_size=text.hidden_size,
                                         num_hidden_layers=text.num_hidden_layers,
                                         num_attention_heads=text.num_attention_heads,
                                         intermediate_size=text.intermediate_size,
                                         max_position_embeddings=text.max_position_embeddings, type_vocab_size=1),
                           add_pooling_layer=False)
    model = build_fiber(cfg, eager=True)
    pixels, ids, mask = inputs(cfg, batch=2, height=64, width=64, tokens=9)

    def flops(fn: object) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    ours = flops(lambda: model(pixels, ids, mask, fusion=False))
    backbones = flops(lambda: swin.forward_features(pixels))
    backbones += flops(lambda: roberta(input_ids=ids, attention_mask=mask))
    fused = flops(lambda: model(pixels, ids, mask, fusion=True))
    print(f"dual encoder {ours / 1e6:.2f} MFLOP, timm Swin + HF RoBERTa {backbones / 1e6:.2f} MFLOP, "
          f"fusion on {fused / 1e6:.2f} MFLOP")
    assert ours == backbones and fused > ours
