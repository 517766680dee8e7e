"""``FusedSwinAttention`` (state dict, stage rule) and the timm / torchvision patchers: a patched
Swin equals its unpatched self (tolerance rule against the fp64 model), outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from fiber_kernels.modules.swin import FusedSwinAttention, swin_stage_window
from fiber_kernels.testing.numerics import assert_close_to_reference

OFFICIAL_KEYS = {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "relative_position_bias_table",
                 "relative_position_index"}


def test_state_dict_has_the_official_window_attention_keys() -> None:
    fused = FusedSwinAttention(96, 3, 7)
    state = fused.state_dict()
    assert set(state) == OFFICIAL_KEYS
    assert state["relative_position_bias_table"].shape == (169, 3)
    assert state["relative_position_index"].shape == (49, 49)
    assert state["qkv.weight"].shape == (288, 96) and state["proj.weight"].shape == (96, 96)


def test_state_dict_loads_into_timm_window_attention_and_computes_the_same() -> None:
    swin = pytest.importorskip("timm.models.swin_transformer", reason="timm is not installed")
    timm_attn = swin.WindowAttention(64, num_heads=2, window_size=7)
    fused = FusedSwinAttention(64, 2, 7, backend="torch")
    assert fused.load_state_dict(timm_attn.state_dict(), strict=False).missing_keys == ["relative_position_index"]
    assert torch.equal(fused.relative_position_index, timm_attn.relative_position_index)
    x = torch.randn(2, 7, 14, 64)
    windows = swin.window_partition(x, (7, 7)).view(-1, 49, 64)
    expected = swin.window_reverse(timm_attn(windows).view(-1, 7, 7, 64), (7, 7), 7, 14)
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("resolution", "window", "shift", "expected"), [
    ((24, 24), 12, 6, (12, 6)), ((12, 12), 12, 6, (12, 0)), ((7, 7), 12, 6, (7, 0)), ((7, 30), 12, 6, (7, 0))])
def test_stage_rule(resolution: tuple[int, int], window: int, shift: int, expected: tuple[int, int]) -> None:
    assert swin_stage_window(resolution, window, shift) == expected
    fused = FusedSwinAttention(32, 1, window, shift, input_resolution=resolution)
    assert fused.window_size == (expected[0],) * 2 and fused.shift_size == (expected[1],) * 2
    assert fused.relative_position_bias_table.shape == ((2 * expected[0] - 1) ** 2, 1)


def test_stage_rule_agrees_with_timm_blocks() -> None:
    swin = pytest.importorskip("timm.models.swin_transformer", reason="timm is not installed")
    for resolution in (6, 12, 24):
        block = swin.SwinTransformerBlock(32, (resolution, resolution), num_heads=1, window_size=12, shift_size=6)
        window, shift = swin_stage_window((resolution, resolution), 12, 6)
        assert block.window_size == (window, window) and block.shift_size == (shift, shift)


def test_attention_dropout_is_refused() -> None:
    with pytest.raises(ValueError, match="attn_drop must be 0: attention dropout is not fused, got 0.1"):
        FusedSwinAttention(32, 1, 7, attn_drop=0.1)


def _compare(model: torch.nn.Module, patched: torch.nn.Module, images: torch.Tensor) -> None:
    """Patched fp32 vs the unpatched fp64 model, with the unpatched fp32 error as the yardstick."""
    reference = copy.deepcopy(model).double()
    ref_images = images.double().requires_grad_()
    expected = reference(ref_images)
    same = model(images.clone().requires_grad_())
    got = patched(images)
    assert_close_to_reference(got, expected, same, factor=3.0, atol_floor=1e-5, name="logits")
    weights = lambda m: [p for n, p in m.named_parameters() if "relative_position_bias_table" in n or "qkv" in n]
    grad = torch.randn_like(expected)
    for name, g_got, g_ref, g_same in zip(
            [n for n, _ in patched.named_parameters() if "relative_position_bias_table" in n or "qkv" in n],
            torch.autograd.grad(got, weights(patched), grad.float()),
            torch.autograd.grad(expected, weights(reference), grad),
            torch.autograd.grad(same, weights(model), grad.float()), strict=True):
        assert_close_to_reference(g_got, g_ref, g_same, factor=3.0, atol_floor=1e-5, name=name)


def _tiny_timm(**kwargs: object) -> torch.nn.Module:
    swin = pytest.importorskip("timm.models.swin_transformer", reason="timm is not installed")
    torch.manual_seed(0)
    return swin.SwinTransformer(patch_size=4, embed_dim=32, depths=(2, 2), num_heads=(1, 2), num_classes=5,
                                **kwargs).eval()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_patched_timm_swin_equals_unpatched_padded_and_shift_first(backend: str) -> None:
    from fiber_kernels.patch.timm_swin import patch_timm_swin

    # 44x60 images: 11x15 tokens with window 4 (padded to 12x16, timm shifts before padding), then 6x8.
    model = _tiny_timm(img_size=(44, 60), window_size=4, strict_img_size=False)
    patched = patch_timm_swin(copy.deepcopy(model), backend=backend)
    assert patched.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in
               zip(patched.state_dict().values(), model.state_dict().values(), strict=True))
    assert sum(isinstance(m, FusedSwinAttention) for m in patched.modules()) == 4
    _compare(model, patched, torch.randn(1, 3, 44, 60))


def test_patched_timm_swin_fixed_resolution_stage_rule() -> None:
    from fiber_kernels.patch.timm_swin import patch_timm_swin

    # 32x32 images: 8x8 tokens with window 8 (stage 1 shifts by 4), then 4x4 < window: window 4, no shift.
    model = _tiny_timm(img_size=32, window_size=8)
    patched = patch_timm_swin(copy.deepcopy(model), backend="triton")
    stage2 = [m for m in patched.modules() if isinstance(m, FusedSwinAttention)][2:]
    assert all(m.window_size == (4, 4) for m in stage2)
    _compare(model, patched, torch.randn(1, 3, 32, 32))


def test_patch_timm_keeps_the_parameter_objects() -> None:
    from fiber_kernels.patch.timm_swin import patch_timm_swin

    model = _tiny_timm(img_size=32, window_size=8)
    before = {name: id(p) for name, p in model.named_parameters()}
    patch_timm_swin(model)
    assert {name: id(p) for name, p in model.named_parameters()} == before


def test_patch_timm_refuses_models_without_swin_and_attention_dropout() -> None:
    from fiber_kernels.patch.timm_swin import patch_timm_swin

    pytest.importorskip("timm", reason="timm is not installed")
    with pytest.raises(ValueError, match="no timm SwinTransformerBlock with WindowAttention found in Linear"):
        patch_timm_swin(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="attention dropout 0.1 is not fused"):
        patch_timm_swin(_tiny_timm(img_size=32, window_size=8, attn_drop_rate=0.1))


def _tiny_torchvision(**kwargs: object) -> torch.nn.Module:
    swin = pytest.importorskip("torchvision.models.swin_transformer", reason="torchvision is not installed")
    torch.manual_seed(0)
    return swin.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[1, 2],
                                window_size=[4, 4], num_classes=5, **kwargs).eval()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_patched_torchvision_swin_equals_unpatched(backend: str) -> None:
    from fiber_kernels.patch.torchvision_swin import patch_torchvision_swin

    # 44x60 images: 11x15 tokens (padded to 12x16, pad then shift), then 6x8 (padded to 8x8).
    model = _tiny_torchvision()
    patched = patch_torchvision_swin(copy.deepcopy(model), backend=backend)
    assert patched.state_dict().keys() == model.state_dict().keys()
    assert sum(isinstance(m, FusedSwinAttention) for m in patched.modules()) == 4
    _compare(model, patched, torch.randn(1, 3, 44, 60))


def test_torchvision_single_window_axis_is_not_shifted() -> None:
    from fiber_kernels.patch.torchvision_swin import patch_torchvision_swin

    # 16x52 images: stage 2 is 2x7 tokens; the 4-token window covers the height: torchvision drops
    # that axis' shift only.
    model = _tiny_torchvision()
    patched = patch_torchvision_swin(copy.deepcopy(model), backend="torch")
    _compare(model, patched, torch.randn(1, 3, 16, 52))


def test_patch_torchvision_refuses_v2_and_attention_dropout() -> None:
    from fiber_kernels.patch.torchvision_swin import patch_torchvision_swin

    swin = pytest.importorskip("torchvision.models.swin_transformer", reason="torchvision is not installed")
    v2 = swin.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2], num_heads=[1], window_size=[4, 4],
                              block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2)
    with pytest.raises(ValueError, match="SwinTransformer is a torchvision Swin V2: its scaled cosine attention"):
        patch_torchvision_swin(v2)
    with pytest.raises(ValueError, match="attention dropout 0.1 is not fused"):
        patch_torchvision_swin(_tiny_torchvision(attention_dropout=0.1))
    with pytest.raises(ValueError, match="no torchvision ShiftedWindowAttention found in Linear"):
        patch_torchvision_swin(torch.nn.Linear(2, 2))
