"""timm / torchvision patchers on the installed projects: ``set_input_size`` after patching, FX tracing, Swin V2."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
from fiber_kernels.modules import FusedSwinAttention
from fiber_kernels.patch import patch_timm_swin, patch_torchvision_swin

from ._compare import max_diffs, randomize, require, saved_and_loaded

pytestmark = pytest.mark.drop_in
timm_swin = require("timm.models.swin_transformer", "timm", "pip install 'timm>=1.0'")
tv_swin = require("torchvision.models.swin_transformer", "torchvision", "pip install torchvision")


def _timm(**kwargs: object) -> torch.nn.Module:
    model = timm_swin.SwinTransformer(patch_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), num_classes=5,
                                      **kwargs)
    return randomize(model).eval()


def _fx_leaves(graph_module: torch.fx.GraphModule) -> int:
    return sum(node.op == "call_function" and node.target.__name__ == "swin_window_attention"
               for node in graph_module.graph.nodes)


@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")  # timm's table interpolation
def test_timm_keeps_working_through_set_input_size() -> None:
    # Patched at 44x60 (dynamic mask), then resized twice, each time as the unpatched model is.
    model = _timm(img_size=(44, 60), window_size=4, strict_img_size=False)
    patched = patch_timm_swin(copy.deepcopy(model), backend="torch")
    keys = list(model.state_dict())
    for img_size, window, windows in [((44, 60), 4, [(4, 4)] * 4), ((64, 48), 8, [(8, 8)] * 2 + [(8, 6)] * 2),
                                      ((32, 32), 4, [(4, 4)] * 4)]:
        for m in (model, patched):
            m.set_input_size(img_size=img_size, window_size=window)
        assert [m.window_size for m in patched.modules() if isinstance(m, FusedSwinAttention)] == windows
        assert list(patched.state_dict()) == keys
        images = torch.randn(2, 3, *img_size)
        out_diff, grad_diff = max_diffs(model, patched, lambda m, images=images: m(images))
        assert out_diff < 1e-4 and grad_diff < 1e-4, (img_size, out_diff, grad_diff)


@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")
def test_timm_patch_after_set_input_size() -> None:
    model = _timm(img_size=64, window_size=4)
    model.set_input_size(img_size=(48, 80), window_size=8)
    patched = patch_timm_swin(copy.deepcopy(model), backend="torch")
    images = torch.randn(1, 3, 48, 80)
    out_diff, grad_diff = max_diffs(model, patched, lambda m: m(images))
    assert out_diff < 1e-4 and grad_diff < 1e-4, (out_diff, grad_diff)


def test_timm_symbolic_trace() -> None:
    # The unpatched dynamic-mask model does not trace (timm fills its mask by item assignment);
    # the patched one does, with one leaf per block.
    model = _timm(img_size=(44, 60), window_size=4, strict_img_size=False)
    with pytest.raises(TypeError, match="Proxy"):
        torch.fx.symbolic_trace(model)
    traced = torch.fx.symbolic_trace(patch_timm_swin(copy.deepcopy(model), backend="torch"))
    assert _fx_leaves(traced) == 4
    images = torch.randn(2, 3, 44, 60)
    torch.testing.assert_close(traced(images), model(images), rtol=0, atol=1e-5)


def test_torchvision_symbolic_trace() -> None:
    model = randomize(tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                                              window_size=[4, 4], num_classes=5)).eval()
    traced = torch.fx.symbolic_trace(patch_torchvision_swin(copy.deepcopy(model), backend="torch"))
    assert _fx_leaves(traced) == 4
    images = torch.randn(2, 3, 44, 60)
    out_diff, grad_diff = max_diffs(model, traced, lambda m: m(images))
    assert out_diff < 1e-4 and grad_diff < 1e-4, (out_diff, grad_diff)


def test_swin_v2_is_refused_with_the_reason() -> None:
    v2 = require("timm.models.swin_transformer_v2", "timm", "pip install 'timm>=1.0'")
    model = v2.SwinTransformerV2(img_size=32, patch_size=4, embed_dim=32, depths=(2,), num_heads=(2,), window_size=4)
    refusal = "is {} Swin V2: its scaled cosine attention .* run it unpatched$"
    with pytest.raises(ValueError, match="SwinTransformerV2 " + refusal.format("a timm")):
        patch_timm_swin(model)
    tv = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2], num_heads=[2], window_size=[4, 4],
                                 block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2)
    with pytest.raises(ValueError, match="SwinTransformer " + refusal.format("a torchvision")):
        patch_torchvision_swin(tv)


def test_patched_timm_pickles() -> None:
    model = patch_timm_swin(_timm(img_size=32, window_size=4), backend="torch")
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(saved_and_loaded(model)(images), model(images), rtol=0, atol=0)
