"""The fine-stage grounding head: torchvision FPN over Swin stages 2-4 with P6/P7, and GLIP's ATSS
vision-language head (``maskrcnn_benchmark/modeling/rpn/atss.py`` towers, ``vldyhead.py`` dot-product
word-region alignment).

Per level: ``cls_tower`` / ``bbox_tower`` = ``head_convs`` x (3x3 conv, GroupNorm, ReLU) shared over
levels; ``bbox_pred`` (3x3, scaled by a per-level ``Scale``) and ``centerness`` (3x3) on the box
tower; alignment logits ``(regions @ proj_tokens^T) / exp(log_scale) + (t_hat @ bias_lang + bias0)``
with ``t_hat`` the L2-normalised text tokens (padding zeroed, FIBER's ``embedded``),
``proj_tokens = dot_product_projection_text(t_hat / 2)``
and the regions the cls tower's features (GLIP's image projection is the identity), clamped to
+-50000 as GLIP's ``CLAMP_DOT_PRODUCT``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from .config import FiberConfig
from .outputs import FiberOutput, GroundingOutput

DOT_PRODUCT_CLAMP = 50000.0


class Scale(nn.Module):
    """A learnable scalar factor, stored with shape (1,) (maskrcnn_benchmark's ``Scale``)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def glip_anchors(sizes: list[tuple[int, int]], strides: list[int], anchor_scale: float,
                 device: torch.device) -> torch.Tensor:
    """``(sum H*W, 4)`` fp32 xyxy anchors, one square per location, GLIP's generator (see ``GroundingOutput``)."""
    parts = []
    for (height, width), stride in zip(sizes, strides, strict=True):
        half = (anchor_scale * stride - 1) / 2
        centre_y = torch.arange(height, device=device, dtype=torch.float32) * stride + (stride - 1) / 2
        centre_x = torch.arange(width, device=device, dtype=torch.float32) * stride + (stride - 1) / 2
        y, x = torch.meshgrid(centre_y, centre_x, indexing="ij")
        parts.append(torch.stack([x - half, y - half, x + half, y + half], dim=-1).reshape(-1, 4))
    return torch.cat(parts)


def _tower(channels: int, convs: int, groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.ReLU()]
    return nn.Sequential(*layers)


class WordRegionAlignment(nn.Module):
    """GLIP's dot-product word-region alignment: regions ``(B, A, C)``, text tokens ``(B, T, D)`` and their 0/1
    mask ``(B, T)`` -> logits ``(B, A, T)``. Its own parameters sit in a module with tensor inputs and outputs
    (ZeRO-3 gathers and releases them around it like any layer)."""

    def __init__(self, channels: int, text_dim: int, log_scale: float, bias_value: float) -> None:
        super().__init__()
        self.dot_product_projection_text = nn.Linear(text_dim, channels)
        self.log_scale = nn.Parameter(torch.full((1,), log_scale))
        self.bias_lang = nn.Parameter(torch.zeros(text_dim))
        self.bias0 = nn.Parameter(torch.full((1,), bias_value))

    def forward(self, regions: torch.Tensor, text_tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # FIBER's ``get_aggregated_output``: padding tokens are zeroed before the normalisation
        embedded = text_tokens * attention_mask[..., None].to(text_tokens.dtype)
        text = nn.functional.normalize(embedded, dim=-1)
        proj_tokens = self.dot_product_projection_text(text / 2.0)
        token_bias = text @ self.bias_lang + self.bias0
        logits = regions @ proj_tokens.transpose(1, 2) / self.log_scale.exp() + token_bias[:, None, :]
        return logits.clamp(-DOT_PRODUCT_CLAMP, DOT_PRODUCT_CLAMP)


class GroundingHead(nn.Module):
    """``forward(out: FiberOutput) -> GroundingOutput`` from ``out.image_features`` and ``out.text_tokens``."""

    def __init__(self, cfg: FiberConfig) -> None:
        super().__init__()
        channels, text_dim = cfg.fpn_channels, cfg.text.hidden_size
        self.anchor_scale = cfg.anchor_scale
        self.first_stride = 2 * cfg.image.patch_size  # P3 = Swin stage 2
        self.fpn = FeaturePyramidNetwork(cfg.image.num_features[1:], channels,
                                         extra_blocks=LastLevelP6P7(channels, channels))
        self.cls_tower = _tower(channels, cfg.head_convs, cfg.head_groups)
        self.bbox_tower = _tower(channels, cfg.head_convs, cfg.head_groups)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(5))
        bias_value = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
        self.alignment = WordRegionAlignment(channels, text_dim, cfg.log_scale, bias_value)
        for module in [self.cls_tower, self.bbox_tower, self.bbox_pred, self.centerness]:
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.normal_(conv.weight, std=0.01)
                    nn.init.zeros_(conv.bias)

    def forward(self, out: FiberOutput) -> GroundingOutput:
        features = OrderedDict((f"stage{i + 2}", x) for i, x in enumerate(out.image_features))
        pyramid = list(self.fpn(features).values())
        regions, regression, centerness = [], [], []
        for level, x in enumerate(pyramid):
            regions.append(self.cls_tower(x).flatten(2).transpose(1, 2))
            box = self.bbox_tower(x)
            regression.append(self.scales[level](self.bbox_pred(box)).flatten(2).transpose(1, 2))
            centerness.append(self.centerness(box).flatten(1))
        logits = self.alignment(torch.cat(regions, 1), out.text_tokens, out.text_attention_mask)
        sizes = [tuple(x.shape[-2:]) for x in pyramid]
        strides = [self.first_stride * 2 ** level for level in range(len(pyramid))]
        anchors = glip_anchors(sizes, strides, self.anchor_scale, out.text_tokens.device)
        return GroundingOutput(anchors=anchors, num_anchors_per_level=[h * w for h, w in sizes], cls_logits=logits,
                               box_regression=torch.cat(regression, 1), centerness=torch.cat(centerness, 1))
