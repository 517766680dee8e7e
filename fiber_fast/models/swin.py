"""FIBER's Swin image backbone on timm's parts, with the image->text fusion branch.

Module names are timm's ``SwinTransformer`` (``patch_embed``, ``layers.{s}.downsample`` at the *start* of
stage ``s``, ``layers.{s}.blocks.{b}``, ``norm``), so timm state dicts load by name. Where FIBER differs
from timm, FIBER wins:
- padding: the block pads the normed map to window multiples, *then* shifts (official Swin/FIBER);
  timm shifts, then pads;
- the window rule is FIBER's per ``stage`` (``stage_windows``), fixed at build time from ``img_size``;
- fused blocks carry ``fusion`` (``fiber_kernels.modules.ImageToTextFusion``), applied to the window
  attention's output after its projection and before the block residual.
The eager block runs timm's ``WindowAttention`` on explicit windows (FIBER's computation, in FIBER's
order); the fused block's ``attn`` is ``FusedSwinAttention`` over the whole map (same parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fiber_kernels.modules import FusedSwinAttention, ImageToTextFusion
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, window_partition, window_reverse
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import FiberConfig


def stage_windows(cfg: FiberConfig) -> list[tuple[int, int]]:
    """``(window, shift)`` of each stage. Coarse: FIBER's fixed-resolution rule on the stage's map at
    ``img_size`` (``min(H, W) <= window`` -> window ``min(H, W)``, shift 0). Fine: window kept, shift window // 2."""
    image = cfg.image
    size = image.img_size if isinstance(image.img_size, tuple) else (image.img_size, image.img_size)
    grid = [-(-size[0] // image.patch_size), -(-size[1] // image.patch_size)]
    result = []
    for _ in image.depths:
        window, shift = image.window_size, image.window_size // 2
        if cfg.stage == "coarse" and min(grid) <= window:
            window, shift = min(grid), 0
        result.append((window, shift))
        grid = [(grid[0] + 1) // 2, (grid[1] + 1) // 2]
    return result


class FiberSwinBlock(SwinTransformerBlock):
    """timm's Swin block with FIBER's pad-then-shift order and an optional image->text branch.

    ``forward(x, text=None, text_padding=None)``: x ``(B, H, W, C)`` any ``H, W``; text ``(B, T, D_text)``
    previous-layer text states; text_padding bool ``(B, T)`` True = padding. ``text=None`` runs no fusion.
    ``checkpointing`` (``FiberConfig.activation_checkpointing``): with grad enabled, ``"mlp"`` recomputes
    ``norm2`` + MLP in the backward, ``"block"`` the whole block (non-reentrant, RNG state preserved).
    """

    fusion: ImageToTextFusion | None

    def __init__(self, *args: object, dim_text: int | None = None, checkpointing: str = "none",
                 **kwargs: object) -> None:
        super().__init__(*args, always_partition=True, dynamic_mask=True, **kwargs)
        if dim_text is not None:
            self.fusion = ImageToTextFusion(self.dim, self.attn.num_heads, dim_text=dim_text)
        else:
            self.fusion = None
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None,
                text_padding: torch.Tensor | None = None) -> torch.Tensor:
        if self.checkpointing == "block" and torch.is_grad_enabled():
            return checkpoint(self._block, x, text, text_padding, use_reentrant=False)
        return self._block(x, text, text_padding)

    def _block(self, x: torch.Tensor, text: torch.Tensor | None, text_padding: torch.Tensor | None) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attention(self.norm1(x), text, text_padding))
        x = x.reshape(B, -1, C)
        if self.checkpointing == "mlp" and torch.is_grad_enabled():
            x = x + self.drop_path2(checkpoint(self._norm_mlp, x, use_reentrant=False))
        else:
            x = x + self.drop_path2(self._norm_mlp(x))
        return x.reshape(B, H, W, C)

    def _norm_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` -> ``mlp(norm2(x))``, the same shape."""
        return self.mlp(self.norm2(x))

    def _attention(self, x: torch.Tensor, text: torch.Tensor | None, text_padding: torch.Tensor | None
                    ) -> torch.Tensor:
        if text is not None and self.fusion is None:
            raise ValueError("this block has no fusion branch; pass text=None")
        if isinstance(self.attn, FusedSwinAttention):
            out = self.attn(x)
            if text is None:
                return out
            B, H, W, C = out.shape
            # The branch is token-wise, so the whole map is one "window" per image.
            return self.fusion(out.reshape(B, H * W, C), text, text_padding).view(B, H, W, C)
        return self._attn_windows(x, text, text_padding)

    def _attn_windows(self, x: torch.Tensor, text: torch.Tensor | None, text_padding: torch.Tensor | None
                      ) -> torch.Tensor:
        """FIBER's order: pad, shift, partition, attention (+ i2t per window), merge, unshift, crop."""
        B, H, W, C = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
        _, Hp, Wp, _ = x.shape
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        mask = self.get_attn_mask(x) if shifted else None
        windows = window_partition(x, self.window_size).view(-1, wh * ww, C)
        windows = self.attn(windows, mask=mask)
        if text is not None:
            windows = self.fusion(windows, text, text_padding)
        x = window_reverse(windows.view(-1, wh, ww, C), self.window_size, Hp, Wp)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()

    def use_fused_attention(self, backend: str) -> None:
        """Swap timm's ``WindowAttention`` for ``FusedSwinAttention`` (same Parameter objects)."""
        fused = FusedSwinAttention.from_module(self.attn, window_size=self.window_size, shift_size=self.shift_size,
                                               scale=self.attn.scale, shift_first=False,
                                               proj_drop=self.attn.proj_drop.p)
        fused.backend = backend
        self.attn = fused


class SwinStage(nn.Module):
    """``downsample`` (timm ``PatchMerging``, or identity for stage 0) then ``blocks``."""

    def __init__(self, downsample: nn.Module, blocks: list[FiberSwinBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class SwinBackbone(nn.Module):
    """Patch embedding, stages, final ``norm``; ``feature_norms`` (stages 2-4) when the detection head is built.

    The model runs the blocks itself (``FiberModel``), in the order of ``block_order``.
    """

    def __init__(self, cfg: FiberConfig) -> None:
        super().__init__()
        image = cfg.image
        dims = image.num_features
        self.patch_embed = PatchEmbed(img_size=image.img_size, patch_size=image.patch_size, in_chans=image.in_chans,
                                      embed_dim=image.embed_dim, norm_layer=nn.LayerNorm, output_fmt="NHWC",
                                      strict_img_size=False, dynamic_img_pad=True)
        self.pos_drop = nn.Dropout(image.drop_rate)
        windows = stage_windows(cfg)
        total = sum(image.depths)
        drop_path = torch.linspace(0, image.drop_path_rate, total, device="cpu").tolist()
        self.block_order = [(stage, block) for stage, depth in enumerate(image.depths) for block in range(depth)]
        fused = set(self.block_order[total - cfg.fusion_layers:])
        layers = []
        for stage, depth in enumerate(image.depths):
            window, shift = windows[stage]
            blocks = []
            for block in range(depth):
                index = sum(image.depths[:stage]) + block
                blocks.append(FiberSwinBlock(
                    dim=dims[stage], input_resolution=(window, window), num_heads=image.num_heads[stage],
                    window_size=window, shift_size=0 if block % 2 == 0 else shift, mlp_ratio=image.mlp_ratio,
                    qkv_bias=image.qkv_bias, proj_drop=image.drop_rate, drop_path=drop_path[index],
                    dim_text=cfg.text.hidden_size if (stage, block) in fused else None,
                    checkpointing=cfg.activation_checkpointing))
            downsample = PatchMerging(dim=dims[stage - 1], out_dim=dims[stage]) if stage > 0 else nn.Identity()
            layers.append(SwinStage(downsample, blocks))
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dims[-1])
        if cfg.detection_head:
            self.feature_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in dims[1:])
        else:
            self.feature_norms = None

    def block(self, position: tuple[int, int]) -> FiberSwinBlock:
        return self.layers[position[0]].blocks[position[1]]

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, ceil(H/p), ceil(W/p), C0)`` (padded to the patch multiple)."""
        return self.pos_drop(self.patch_embed(pixel_values))

