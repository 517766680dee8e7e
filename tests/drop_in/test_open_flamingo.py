"""``patch_open_flamingo`` against the installed OpenFlamingo's own ``GatedCrossAttentionBlock``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ._compare import assert_low_precision_close, max_diffs, randomize, require, saved_and_loaded

pytestmark = pytest.mark.drop_in
helpers = require("open_flamingo.src.helpers", "open-flamingo",
                  "pip install --no-deps open-flamingo==2.0.1 einops-exts==0.0.4 open_clip_torch==3.3.0 ftfy")

from fiber_kernels.patch import patch_open_flamingo  # noqa: E402


class _Inputs(nn.Module):
    """A block with its inputs as parameters, so the comparison covers d(text) and d(media) too."""

    def __init__(self, block: nn.Module, text: torch.Tensor, media: torch.Tensor) -> None:
        super().__init__()
        self.block, self.text, self.media = block, nn.Parameter(text), nn.Parameter(media)

    def forward(self, media_locations: torch.Tensor, use_cached_media: bool = False) -> torch.Tensor:
        text = self.text[:, :media_locations.shape[1]] if not use_cached_media else self.text
        return self.block(text, self.media, media_locations=media_locations, use_cached_media=use_cached_media)


def _locations() -> torch.Tensor:
    # Row 0: images at 2 and 7 (tokens 0-1 see none); row 1: no image at all; row 2: two adjacent
    # images (token 4 sees image 1 only, tokens 5.. image 2); row 3: one image at the first token.
    locations = torch.zeros(4, 11, dtype=torch.bool)
    locations[0, [2, 7]] = True
    locations[2, [4, 5]] = True
    locations[3, 0] = True
    return locations


def _block(immediate: bool) -> nn.Module:
    block = helpers.GatedCrossAttentionBlock(dim=48, dim_visual=40, dim_head=32, heads=2, ff_mult=2,
                                             only_attend_immediate_media=immediate)
    return randomize(block, std=0.3)  # the gates are 0 at init, which would hide the attention


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.slow)])
@pytest.mark.parametrize("immediate", [True, False])
@pytest.mark.parametrize("cached", [False, True])
def test_block_outputs_and_gradients_equal_unpatched(backend: str, immediate: bool, cached: bool) -> None:
    model = _Inputs(_block(immediate), torch.randn(4, 11, 48), torch.randn(4, 2, 5, 40))
    patched = patch_open_flamingo(copy.deepcopy(model), backend=backend)
    assert sum(type(m).__name__.startswith("Fused") for m in patched.modules()) == 2  # block + attention
    assert list(patched.state_dict()) == list(model.state_dict())
    locations = _locations()[:, :6] if cached else _locations()
    out_diff, grad_diff = max_diffs(model, patched, lambda m: m(locations, use_cached_media=cached))
    assert out_diff < 1e-4 and grad_diff < 1e-4, (out_diff, grad_diff)


def test_the_mask_is_the_one_openflamingo_applies() -> None:
    # Independent of OpenFlamingo's code: moving image 2's latents changes exactly the attention
    # outputs of the tokens whose text time is 2; tokens before any image get 0.
    block = patch_open_flamingo(_block(immediate=True), backend="torch")
    text, media = torch.randn(4, 11, 48), torch.randn(4, 2, 5, 40)
    locations = _locations()
    base = block.attn(text, media, media_locations=locations)
    moved = media.clone()
    moved[:, 1] += 1.0
    changed = (block.attn(text, moved, media_locations=locations) - base).abs().amax(-1) > 0
    times = locations.long().cumsum(-1)
    assert torch.equal(changed, times == 2)
    assert torch.equal(base.abs().amax(-1) == 0, times == 0)  # no image yet: attention output 0


def test_refusals() -> None:
    with pytest.raises(ValueError, match="no OpenFlamingo MaskedCrossAttention"):
        patch_open_flamingo(nn.Linear(2, 2))
    block = patch_open_flamingo(_block(immediate=True), backend="torch")
    text, media = torch.randn(4, 11, 48), torch.randn(4, 1, 5, 40)
    with pytest.raises(ValueError, match="marks up to 2 media in a row but media .* holds T_img = 1"):
        block(text, media, media_locations=_locations())
    with pytest.raises(TypeError, match="media_locations must be a bool tensor"):
        block(text, media, media_locations=None)
    with pytest.raises(ValueError, match="media_locations \\(B, T_txt\\) must cover x"):
        block(text, media, media_locations=_locations()[:, :5])


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # OpenFlamingo's LM call
def test_whole_flamingo_model_equals_unpatched() -> None:
    # OpenFlamingo's own Flamingo wrapper on a tiny open_clip vision tower and a tiny HF Llama
    # (the mixin wraps every decoder layer in a FlamingoLayer with a gated cross-attention block).
    transformers = require("transformers", "transformers", "pip install 'transformers>=5.0'")
    open_clip_model = require("open_clip.model", "open_clip_torch", "pip install --no-deps open_clip_torch==3.3.0")
    from open_flamingo.src.flamingo import Flamingo
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin
    from open_flamingo.src.utils import extend_instance

    vision = nn.Module()
    vision.visual = open_clip_model._build_vision_tower(32, open_clip_model.CLIPVisionCfg(
        layers=1, width=64, head_width=32, image_size=16, patch_size=8, output_tokens=True))
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=40, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2))
    extend_instance(lm, FlamingoLMMixin)
    lm.set_decoder_layers_attr_name("model.layers")
    model = randomize(Flamingo(vision, lm, eoc_token_id=3, media_token_id=4, vis_dim=64).eval())
    patched = patch_open_flamingo(copy.deepcopy(model), backend="torch")
    assert sum(type(m).__name__.startswith("Fused") for m in patched.modules()) == 4  # 2 blocks, 2 attentions
    images = torch.randn(2, 2, 1, 3, 16, 16)
    ids = torch.randint(5, 40, (2, 9))
    ids[0, [0, 5]] = 4  # <image> tokens: row 0 sees image 1 then image 2, row 1 only image 1 from token 2
    ids[1, 2] = 4
    mask = torch.ones_like(ids)
    out_diff, grad_diff = max_diffs(model, patched, lambda m: m(images, ids, attention_mask=mask).logits)
    assert out_diff < 1e-4 and grad_diff < 1e-4, (out_diff, grad_diff)


def test_patched_block_pickles() -> None:
    block = patch_open_flamingo(_block(immediate=True), backend="torch")
    text, media = torch.randn(4, 11, 48), torch.randn(4, 2, 5, 40)
    loaded = saved_and_loaded(block)
    assert type(loaded) is type(block) and type(loaded.attn) is type(block.attn)
    torch.testing.assert_close(loaded(text, media, media_locations=_locations()),
                               block(text, media, media_locations=_locations()), rtol=0, atol=0)


def test_bfloat16_patched_block_is_as_close_as_unpatched() -> None:
    model = _Inputs(_block(immediate=True), torch.randn(4, 11, 48), torch.randn(4, 2, 5, 40))
    assert_low_precision_close(model, patch_open_flamingo(copy.deepcopy(model), backend="torch"),
                               lambda m: m(_locations()))
