"""Checkpoints: our safetensors files, and foreign ones (timm Swin, HF RoBERTa, official FIBER) written here
with random weights under the real key names, loaded by name map with zero unexpected keys."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import RobertaConfig, RobertaForMaskedLM

from fiber_fast.models import (
    FiberConfig,
    FiberModel,
    build_fiber,
    load_checkpoint,
    load_pretrained,
    read_checkpoint_config,
    save_checkpoint,
)

from ._helpers import inputs, open_gates, tiny


def _timm_swin(cfg: FiberConfig, window_size: int | None = None) -> torch.nn.Module:
    image = cfg.image
    return timm.models.swin_transformer.SwinTransformer(
        img_size=image.img_size, patch_size=image.patch_size, embed_dim=image.embed_dim, depths=image.depths,
        num_heads=image.num_heads, window_size=window_size or image.window_size, num_classes=10).eval()


def _hf_roberta(cfg: FiberConfig) -> RobertaForMaskedLM:
    text = cfg.text
    config = RobertaConfig(vocab_size=text.vocab_size, hidden_size=text.hidden_size,
                           num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
                           intermediate_size=text.intermediate_size,
                           max_position_embeddings=text.max_position_embeddings, pad_token_id=text.pad_token_id,
                           type_vocab_size=1, layer_norm_eps=text.layer_norm_eps)
    return RobertaForMaskedLM(config).eval()


def _randomise(module: torch.nn.Module, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(0.05 * torch.randn(param.shape, generator=generator) + (param == 1).float())


def test_own_checkpoint_round_trip_fused_to_eager(tmp_path: object) -> None:
    cfg = tiny(stage="fine")
    fused = build_fiber(cfg)
    open_gates(fused)
    path = tmp_path / "model.safetensors"
    save_checkpoint(fused, path)
    assert read_checkpoint_config(path) == cfg
    eager = build_fiber(cfg, eager=True)
    load_checkpoint(eager, path)
    for (name, a), (_, b) in zip(fused.state_dict().items(), eager.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert eager.mlm_head.decoder.weight is eager.text.embeddings.word_embeddings.weight
    with pytest.raises(RuntimeError):
        load_checkpoint(build_fiber(tiny()), path)  # no detection head: unexpected keys


def test_timm_swin_loads_and_matches_timm(tmp_path: object) -> None:
    """A timm-named Swin checkpoint: the dual-encoder image tokens equal timm's own forward_features
    (square input of window multiples, where timm's shift-then-pad equals FIBER's pad-then-shift)."""
    cfg = tiny()
    swin = _timm_swin(cfg)
    _randomise(swin)
    path = tmp_path / "swin.pth"
    torch.save(swin.state_dict(), path)
    model = build_fiber(cfg, eager=True).eval()
    report = load_pretrained(model, path, source="timm")
    assert report.unexpected == [] and report.resized == []
    assert sorted(report.ignored) == ["head.fc.bias", "head.fc.weight"]
    assert all(not key.startswith("image.") or ".fusion." in key for key in report.missing)
    pixels, ids, mask = inputs(cfg, batch=2, height=64, width=64)
    with torch.no_grad():
        ours = model(pixels, ids, mask, fusion=False).image_tokens
        theirs = swin.forward_features(pixels).flatten(1, 2)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_timm_table_of_another_window_is_resized() -> None:
    cfg = tiny()
    swin = _timm_swin(cfg, window_size=3)
    model = build_fiber(cfg)
    report = load_pretrained(model, swin.state_dict(), source="timm")
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert f"image.{key}" in report.resized
    table = swin.state_dict()[key]  # (5*5, heads) -> (7*7, heads)
    grid = F.interpolate(table.t().reshape(1, -1, 5, 5), size=(7, 7), mode="bicubic")
    torch.testing.assert_close(model.state_dict()[f"image.{key}"], grid[0].permute(1, 2, 0).reshape(49, -1))


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_hf_roberta_loads_and_matches_hf(tmp_path: object, suffix: str) -> None:
    cfg = tiny()
    roberta = _hf_roberta(cfg)
    _randomise(roberta)
    state = {key: value.clone() for key, value in roberta.state_dict().items()}  # untie for safetensors
    path = tmp_path / f"roberta{suffix}"
    if suffix == ".bin":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = build_fiber(cfg, eager=True).eval()
    report = load_pretrained(model, path, source="hf")
    assert report.unexpected == []
    assert set(report.ignored) <= {"lm_head.decoder.weight", "lm_head.decoder.bias"}
    assert not any(key.startswith("text.") and ".fusion." not in key for key in report.missing)
    assert torch.equal(model.mlm_head.bias, roberta.lm_head.bias)
    pixels, ids, mask = inputs(cfg, batch=2, tokens=9)
    with torch.no_grad():
        ours = model(pixels, ids, mask, fusion=False).text_tokens
        theirs = roberta.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_real_names_map_with_real_shapes() -> None:
    """Every key of timm's swin_base_patch4_window12_384 and HF roberta-base (built on meta) lands on a
    base-coarse parameter of the same shape."""
    with torch.device("meta"):
        model = build_fiber(FiberConfig.preset("base-coarse"))
        swin = timm.create_model("swin_base_patch4_window12_384", pretrained=False)
        roberta = RobertaForMaskedLM(RobertaConfig(max_position_embeddings=514, type_vocab_size=1,
                                                   layer_norm_eps=1e-5))
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    for source, state in (("timm", swin.state_dict()), ("hf", roberta.state_dict())):
        report = load_pretrained(_ShapeOnly(model, shapes), {k: torch.empty(v.shape) for k, v in state.items()},
                                 source=source)
        assert report.unexpected == [] and report.resized == [], source


class _ShapeOnly(torch.nn.Module):
    """A stand-in that exposes a model's key shapes and config to ``load_pretrained`` without data."""

    def __init__(self, model: FiberModel, shapes: dict[str, torch.Size]) -> None:
        super().__init__()
        self.config, self.text = model.config, model.text
        self._shapes = shapes

    def state_dict(self, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        return {key: torch.empty(shape) for key, shape in self._shapes.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        for key, value in state.items():
            assert value.shape == self._shapes[key], key


def fiber_official_state(model: FiberModel) -> dict[str, torch.Tensor]:
    """Our weights under microsoft/FIBER's coarse names (fiber_module.py, swin_transformer.py, roberta.py,
    heads.py), with the keys FIBER has and we do not (queues, rank_output, unused alpha_t2i, pooler, buffers)."""
    heads = {"itm_head.text_transform.": "cross_modal_text_transform.",
             "itm_head.image_transform.": "cross_modal_image_transform.",
             "itm_head.text_pooler.": "cross_modal_text_pooler.", "itm_head.image_pooler.": "cross_modal_image_pooler.",
             "itm_head.fc.": "itm_score.fc.", "itc_head.text_transform.": "cross_modal_text_transform_itc.",
             "itc_head.image_transform.": "cross_modal_image_transform_itc.",
             "itc_head.text_pooler.": "cross_modal_text_pooler_itc.",
             "itc_head.image_pooler.": "cross_modal_image_pooler_itc.",
             "mlm_head.dense.": "mlm_score.transform.dense.", "mlm_head.layer_norm.": "mlm_score.transform.LayerNorm."}
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("image."):
            name = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample",
                          key[len("image."):])
            state["vit_model." + name.replace(".fusion.", ".attn.")] = value
        elif key.startswith("text."):
            state["text_transformer." + key[len("text."):].replace(".fusion.", ".")] = value
        elif key == "itc_head.temp":
            state["temp"] = value.reshape(())
        elif key == "mlm_head.bias":
            state["mlm_score.bias"] = value
        elif key == "mlm_head.decoder.weight":
            state["mlm_score.decoder.weight"] = value
        else:
            prefix = next(p for p in heads if key.startswith(p))
            state[heads[prefix] + key[len(prefix):]] = value
    cfg = model.config
    extra = {"image_queue": torch.randn(cfg.text.hidden_size, 8), "queue_ptr": torch.zeros(1, dtype=torch.long),
             "rank_output.weight": state["itm_score.fc.weight"][1:], "rank_output.bias": state["itm_score.fc.bias"][1:],
             "text_transformer.embeddings.position_ids": torch.arange(cfg.text.max_position_embeddings)[None],
             "text_transformer.pooler.dense.weight": torch.randn(cfg.text.hidden_size, cfg.text.hidden_size),
             "vit_model.layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16),
             "vit_model.layers.0.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long)}
    for layer in range(cfg.text.num_hidden_layers - cfg.fusion_layers):
        extra[f"text_transformer.encoder.layer.{layer}.alpha_t2i"] = torch.zeros(1)
    return {**state, **extra}


def test_fiber_official_names_load_and_match(tmp_path: object) -> None:
    cfg = tiny(tie_word_embeddings=False)
    source = build_fiber(cfg, eager=True).eval()
    _randomise(source)
    path = tmp_path / "fiber.ckpt"
    torch.save({"state_dict": fiber_official_state(source), "epoch": 3}, path)
    model = build_fiber(cfg).eval()
    report = load_pretrained(model, path, source="fiber")
    assert report.unexpected == [] and report.missing == []
    assert len(report.ignored) == 8 + cfg.text.num_hidden_layers - cfg.fusion_layers
    pixels, ids, mask = inputs(cfg, batch=2, height=48, width=40)
    with torch.no_grad():
        for fusion in (True, False):
            ours, theirs = model(pixels, ids, mask, fusion=fusion), source(pixels, ids, mask, fusion=fusion)
            for name in ("image_tokens", "text_tokens"):
                torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(model.mlm_head(ours.text_tokens), source.mlm_head(theirs.text_tokens),
                                       atol=2e-5, rtol=1e-5)


def test_fiber_decoder_ignored_when_tied() -> None:
    cfg = tiny()
    state = fiber_official_state(build_fiber(tiny(tie_word_embeddings=False)))
    report = load_pretrained(build_fiber(cfg), state, source="fiber")
    assert report.unexpected == [] and report.missing == [] and "mlm_score.decoder.weight" in report.ignored


def test_bad_sources(tmp_path: object) -> None:
    model = build_fiber(tiny())
    with pytest.raises(ValueError, match="source"):
        load_pretrained(model, {}, source="official")
    report = load_pretrained(model, {"vqa_classifier.0.weight": torch.zeros(2, 2)}, source="fiber")
    assert report.unexpected == ["vqa_classifier.0.weight"]
    with pytest.raises(ValueError, match="shape"):
        load_pretrained(model, {"layers.0.blocks.0.norm1.weight": torch.zeros(7)}, source="timm")
