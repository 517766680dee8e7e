"""``patch_open_flamingo(model)``: OpenFlamingo's gated cross-attention on fused kernels.

``cross_attention`` computes the masked attention and ``gated_residual_linear`` the gated outputs.

OpenFlamingo (``open_flamingo.src.helpers``) lets text token ``i`` of row ``b`` see the latents of
image ``t`` by its *text time* ``t_i`` (the number of media tokens at or before ``i`` in
``media_locations``; with ``use_cached_media`` every token takes the row's media count):
``only_attend_immediate_media=True`` -> image ``t == t_i`` only (``t_i == 0``: no attention, output 0);
False -> images ``t <= t_i``. The patched computation groups the text tokens by ``t_i`` and hands
each group to ``cross_attention`` with its keys: image ``t``'s latents (immediate; no copy), or all
images with the later ones marked as padding (previous; keys copied once per image). The output
projection, tanh gate and residual are one ``gated_residual_linear``, as are the feed-forward's
second linear, gate and residual. Parameters, state dict keys and module tree are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..cross_attention import cross_attention, gated_residual_linear
from ._swap import SwappedClass, swap_class


def text_time(media_locations: torch.Tensor, num_text: int, use_cached_media: bool) -> torch.Tensor:
    """media_locations ``(B, T_txt)`` bool -> ``(B, num_text)`` int64: how many media precede each token."""
    if use_cached_media:
        return torch.count_nonzero(media_locations, dim=1)[:, None].expand(-1, num_text)
    return media_locations.long().cumsum(dim=-1)


def _grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, times: torch.Tensor, immediate: bool,
                       scale: float, backend: str) -> torch.Tensor:
    """q ``(B, H, T_txt, D)``, k/v ``(B, T_img, H, n, D)``, times ``(B, T_txt)`` -> ``(B, H, T_txt, D)``.

    Query group ``b·T_img + t - 1`` holds the tokens of row ``b`` with text time ``t >= 1``, padded
    with zero queries to the largest group; its keys are image ``t`` (immediate) or images
    ``1..T_img`` with ``> t`` as padding. Tokens with time 0 are handled by the caller."""
    B, H, T_txt, D = q.shape
    T_img, n = k.shape[1], k.shape[3]
    seen = times > 0
    image = (times.clamp(max=T_img) - 1).clamp_min(0)  # (B, T_txt): tokens past the last image see them all
    group = torch.arange(B, device=q.device)[:, None] * T_img + image
    onehot = F.one_hot(image, T_img) * seen[..., None]
    slot = (onehot.cumsum(dim=1) * onehot).sum(-1) - 1  # rank of the token among its row's tokens of that time
    width = max(int(slot.max()) + 1, 1)
    b_idx, i_idx = seen.nonzero(as_tuple=True)
    g_idx, s_idx = group[b_idx, i_idx], slot[b_idx, i_idx]
    grouped_q = q.new_zeros(B * T_img, H, width, D)
    grouped_q[g_idx, :, s_idx] = q[b_idx, :, i_idx]
    if immediate:
        keys, values, padding = k.flatten(0, 1), v.flatten(0, 1), None
    else:
        keys = k.transpose(1, 2).reshape(B, 1, H, T_img * n, D).expand(-1, T_img, -1, -1, -1).flatten(0, 1)
        values = v.transpose(1, 2).reshape(B, 1, H, T_img * n, D).expand(-1, T_img, -1, -1, -1).flatten(0, 1)
        image_of_key = torch.arange(T_img * n, device=q.device) // n + 1  # (T_img·n,)
        padding = (image_of_key[None, :] > torch.arange(1, T_img + 1, device=q.device)[:, None]).repeat(B, 1)
    grouped = cross_attention(grouped_q, keys.contiguous(), values.contiguous(), padding, scale, backend=backend)
    out = q.new_zeros(B, H, T_txt, D)
    out[b_idx, :, i_idx] = grouped[g_idx, :, s_idx]
    if not immediate:
        # OpenFlamingo fills masked logits with -max and subtracts the row max: a token before any
        # image (all logits masked) attends uniformly to every image's latents.
        out = torch.where(seen[:, None, :, None], out, v.mean(dim=(1, 3))[:, :, None, :])
    return out


class _FusedMaskedCrossAttention(SwappedClass):
    """Mixed in before ``open_flamingo.src.helpers.MaskedCrossAttention``."""

    fused_backend: str = "auto"

    def attend(self, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor | None = None,
               use_cached_media: bool = False) -> torch.Tensor:
        """x ``(B, T_txt, D_txt)``, media ``(B, T_img, n, D_img)``, media_locations ``(B, T_txt)`` bool
        -> ``(B, T_txt, heads·dim_head)``, before ``to_out``."""
        if not isinstance(media_locations, torch.Tensor) or media_locations.dtype != torch.bool:
            raise TypeError(f"media_locations must be a bool tensor (B, T_txt) marking the media tokens (OpenFlamingo "
                            f"requires it too), got {type(media_locations).__name__}")
        if not use_cached_media and media_locations.shape != x.shape[:2]:
            raise ValueError(f"media_locations (B, T_txt) must cover x (B, T_txt, D): got shape "
                             f"{tuple(media_locations.shape)} for x of shape {tuple(x.shape)}")
        B, T_txt = x.shape[:2]
        T_img, n = media.shape[1:3]
        q = self.to_q(self.norm(x)).view(B, T_txt, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(media).view(B, T_img, n, 2, self.heads, -1).permute(3, 0, 1, 4, 2, 5).unbind(0)
        times = text_time(media_locations, T_txt, use_cached_media)
        if self.only_attend_immediate_media and bool((times > T_img).any()):
            raise ValueError(f"media_locations marks up to {int(times.max())} media in a row but media "
                             f"(B, T_img, n, D) holds T_img = {T_img}: those tokens would see no image")
        out = _grouped_attention(q, k, v, times, self.only_attend_immediate_media, self.scale, self.fused_backend)
        return out.transpose(1, 2).reshape(B, T_txt, -1)

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor | None = None,
                use_cached_media: bool = False) -> torch.Tensor:
        """As OpenFlamingo's: ``(B, T_txt, D_txt)``."""
        return self.to_out(self.attend(x, media, media_locations, use_cached_media))


class _FusedGatedCrossAttentionBlock(SwappedClass):
    """Mixed in before ``open_flamingo.src.helpers.GatedCrossAttentionBlock``."""

    fused_backend: str = "auto"

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor | None = None,
                use_cached_media: bool = False) -> torch.Tensor:
        """x ``(B, T_txt, D_txt)`` -> ``x + tanh(attn_gate)·attn(x) + ...`` as OpenFlamingo's, ``(B, T_txt, D_txt)``."""
        attended = self.attn.attend(x, media, media_locations, use_cached_media)
        x = gated_residual_linear(x, attended, self.attn.to_out.weight, self.attn.to_out.bias, self.attn_gate,
                                  "tanh", backend=self.fused_backend)
        norm, up, act, down = self.ff
        return gated_residual_linear(x, act(up(norm(x))), down.weight, down.bias, self.ff_gate, "tanh",
                                     backend=self.fused_backend)


def patch_open_flamingo(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Fuse every OpenFlamingo ``GatedCrossAttentionBlock`` and ``MaskedCrossAttention`` of ``model`` in place.

    ``model`` is a ``Flamingo``, its language model, or any module holding the blocks (or a block
    itself). ``backend`` is that of ``cross_attention`` and ``gated_residual_linear``; patching
    again re-sets it. Masked logits get FIBER's ``-10000`` instead of OpenFlamingo's
    ``-finfo.max``: the same softmax unless unmasked logits exceed 10000 in size. Returns ``model``.

    Raises ``ValueError`` when ``model`` holds no OpenFlamingo cross-attention, a block's
    feed-forward is not OpenFlamingo's ``(LayerNorm, Linear, GELU, Linear)``, or (at call time)
    ``media_locations`` counts more media than ``media`` holds with ``only_attend_immediate_media``
    (OpenFlamingo would let those tokens attend uniformly to every image); ``TypeError`` at call
    time without a bool ``media_locations`` (OpenFlamingo fails on None too); ``ImportError``
    without ``open_flamingo``.
    """
    from open_flamingo.src.helpers import GatedCrossAttentionBlock, MaskedCrossAttention

    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str ('auto', 'triton', 'cuda', 'torch'), got {type(backend).__name__}")
    blocks = [m for m in model.modules() if isinstance(m, GatedCrossAttentionBlock)]
    attentions = [m for m in model.modules() if isinstance(m, MaskedCrossAttention)]
    if not attentions:
        raise ValueError(f"no OpenFlamingo MaskedCrossAttention / GatedCrossAttentionBlock found in "
                         f"{type(model).__name__}")
    for block in blocks:
        kinds = tuple(type(layer) for layer in block.ff)
        if kinds != (nn.LayerNorm, nn.Linear, nn.GELU, nn.Linear):
            raise ValueError(f"a GatedCrossAttentionBlock's ff must be (LayerNorm, Linear, GELU, Linear), got "
                             f"{tuple(k.__name__ for k in kinds)}")
    for module, mixin in [(a, _FusedMaskedCrossAttention) for a in attentions] + \
                         [(b, _FusedGatedCrossAttentionBlock) for b in blocks]:
        swap_class(module, mixin)
        module.fused_backend = backend
    return model
