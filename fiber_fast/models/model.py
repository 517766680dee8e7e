"""``FiberModel``: FIBER's fusion in the backbone (Swin + RoBERTa), its heads, and ``build_fiber``.

Schedule (``fiber_module.py`` of microsoft/FIBER, generalised by ``cfg.fusion_layers = F``): the
last ``F`` Swin blocks (in the last two stages) pair in order with the last ``F`` RoBERTa layers.
At a fused pair the two streams update in parallel: the block reads the text states the pair
received, the text layer reads the image tokens the block received (after any downsample), as
FIBER's loop does. Everything before the first pair is unimodal (``image_lower`` / ``text_lower``)
and can be computed once for several upper passes. ``fusion=False`` runs the same upper layers with
no fusion module called at all (the dual encoder of ITC and retrieval).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from fiber_kernels.modules import ImageToTextFusion, TextToImageFusion
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import FiberConfig
from .grounding import GroundingHead
from .heads import ITCHead, ITMHead, MLMHead
from .inputs import check_pixel_values, check_same_batch, check_text
from .outputs import FiberOutput, ImageLower, TextLower
from .roberta import TextBackbone, fused_layer_forward
from .swin import SwinBackbone

INIT_STD = 0.02


class FiberModel(nn.Module):
    """FIBER with ITC/ITM/MLM heads (and the grounding head when ``cfg.detection_head``).

    Build with ``build_fiber``. ``eager=True``: timm's ``WindowAttention`` on explicit windows, the
    fusion branches on ``backend="torch"``, HF ``eager`` attention. Otherwise ``FusedSwinAttention``,
    ``cfg.backend`` for the fusion kernels and HF ``sdpa``. Both have the same state-dict keys.
    """

    def __init__(self, cfg: FiberConfig, eager: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.eager = eager
        self.image = SwinBackbone(cfg)
        self.fused_blocks = self.image.block_order[len(self.image.block_order) - cfg.fusion_layers:]
        self.first_fused_layer = cfg.text.num_hidden_layers - cfg.fusion_layers
        dims = cfg.image.num_features
        image_dims = [None] * self.first_fused_layer + [dims[stage] for stage, _ in self.fused_blocks]
        self.text = TextBackbone(cfg, image_dims, "eager" if eager else "sdpa")
        text_dim = cfg.text.hidden_size
        self.itc_head = ITCHead(dims[-1], text_dim, text_dim)
        self.itm_head = ITMHead(dims[-1], text_dim, text_dim)
        self.mlm_head = MLMHead(self.itm_head.text_transform, cfg.text.vocab_size, cfg.text.layer_norm_eps,
                                self.text.embeddings.word_embeddings if cfg.tie_word_embeddings else None)
        self.grounding_head = GroundingHead(cfg) if cfg.detection_head else None
        for module in (self.mlm_head, self.itc_head, self.itm_head, self.image):
            module.apply(_init_weights)
        self.text.apply(partial(_init_weights, linear_std=cfg.text.linear_init_std))  # last: tied decoder
        backend = "torch" if eager else cfg.backend
        for module in self.modules():
            if isinstance(module, (ImageToTextFusion, TextToImageFusion)):
                module.backend = backend
        for stage in self.image.layers:
            for block in stage.blocks:
                if eager:
                    block.attn.fused_attn = False
                else:
                    block.use_fused_attention(backend)

    # ----------------------------------------------------------------- lower (unimodal) layers
    def image_lower(self, pixel_values: torch.Tensor) -> ImageLower:
        """``(B, 3, H, W)`` float, any ``H, W`` -> Swin states before the first fused block."""
        check_pixel_values(pixel_values, self.config.image.in_chans)
        x = self.image.embed(pixel_values)
        outputs: list[torch.Tensor] = []
        for position in self.image.block_order:
            if position == self.fused_blocks[0]:
                break
            x = self.image.block(position)(self._enter_block(x, position, outputs))
        return ImageLower(x, tuple(outputs))

    def text_lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextLower:
        """``(B, T)`` int64 ids and 0/1 mask -> RoBERTa states before the first fused layer."""
        check_text(input_ids, attention_mask, self.config.max_positions)
        hidden = self.text.embeddings(input_ids=input_ids)
        attention_mask = attention_mask.long()
        mask = self.text.attention_mask(hidden, attention_mask)
        for layer in self.text.encoder.layer[:self.first_fused_layer]:
            hidden = self._text_layer(layer, hidden, mask)
        return TextLower(hidden, attention_mask)

    def _text_layer(self, run: Callable[..., torch.Tensor], *args: object, **kwargs: object) -> torch.Tensor:
        """``run(*args, **kwargs)``: a RoBERTa layer (``(B, T, D)`` in and out); with ``cfg.text_checkpointing``
        and grad enabled, recomputed in the backward (non-reentrant, RNG state preserved: same dropout)."""
        if self.config.text_checkpointing and torch.is_grad_enabled():
            return checkpoint(run, *args, use_reentrant=False, **kwargs)
        return run(*args, **kwargs)

    def _enter_block(self, x: torch.Tensor, position: tuple[int, int], outputs: list[torch.Tensor]) -> torch.Tensor:
        """Before a stage's first block: keep the previous stage's output (stages 2+), downsample."""
        stage, block = position
        if block == 0 and stage > 0:
            if stage > 1:
                outputs.append(x)
            x = self.image.layers[stage].downsample(x)
        return x

    # ----------------------------------------------------------------- upper (fused) layers
    def upper(self, image: ImageLower, text: TextLower, fusion: bool = True) -> FiberOutput:
        """The top ``cfg.fusion_layers`` layers of both streams; ``fusion=False`` calls no fusion module."""
        if not isinstance(image, ImageLower) or not isinstance(text, TextLower):
            raise TypeError(f"upper takes (ImageLower, TextLower), got ({type(image).__name__}, "
                            f"{type(text).__name__})")
        if not isinstance(fusion, bool):
            raise TypeError(f"fusion must be a bool, got {type(fusion).__name__}")
        check_same_batch(image.batch_size, text.batch_size, "image", "text")
        x, outputs = image.tokens, list(image.stage_outputs)
        hidden, attention_mask = text.hidden, text.attention_mask
        mask = self.text.attention_mask(hidden, attention_mask)
        padding = attention_mask == 0
        layers = self.text.encoder.layer[self.first_fused_layer:]
        for step, (position, layer) in enumerate(zip(self.fused_blocks, layers, strict=True)):
            x = self._enter_block(x, position, outputs)
            block = self.image.block(position)
            if fusion:
                last_norm = step < len(layers) - 1 or self.config.last_text_layer_norm
                image_tokens = x.flatten(1, 2)
                x, hidden = (block(x, hidden, padding),
                             self._text_layer(fused_layer_forward, layer, hidden, mask, image_tokens,
                                              last_norm=last_norm))
            else:
                x, hidden = block(x), self._text_layer(layer, hidden, mask)
        outputs.append(x)
        tokens = x.flatten(1, 2) if fusion else self.image.norm(x.flatten(1, 2))
        norms = self.image.feature_norms
        features = tuple((norms[i](out) if norms is not None else out).permute(0, 3, 1, 2)
                         for i, out in enumerate(outputs))
        return FiberOutput(image_tokens=tokens, text_tokens=hidden, image_embeds=tokens.mean(1),
                           text_embeds=hidden[:, 0], image_features=features, text_attention_mask=attention_mask)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                fusion: bool = True) -> FiberOutput:
        """``upper(image_lower(pixel_values), text_lower(input_ids, attention_mask), fusion)``."""
        check_pixel_values(pixel_values, self.config.image.in_chans)
        check_text(input_ids, attention_mask, self.config.max_positions)
        check_same_batch(pixel_values.shape[0], input_ids.shape[0], "pixel_values", "input_ids")
        return self.upper(self.image_lower(pixel_values), self.text_lower(input_ids, attention_mask), fusion)


def _init_weights(module: nn.Module, linear_std: float = INIT_STD) -> None:
    """FIBER/timm/HF initialisation: linears and embeddings N(0, 0.02) (truncated for linears), zero
    biases, unit LayerNorms. Fusion gates (``alpha``) stay 0, bias tables keep timm's init.
    ``linear_std`` replaces 0.02 for linear weights (``TextConfig.linear_init_std`` for the text side)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=linear_std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_fiber(cfg: FiberConfig, eager: bool = False) -> FiberModel:
    """The fused model (``eager=False``) or FIBER's eager computation (``eager=True``) of ``cfg``.

    Works under ``torch.device("meta")`` (no data touched)."""
    if not isinstance(cfg, FiberConfig):
        raise TypeError(f"cfg must be a FiberConfig, got {type(cfg).__name__}")
    return FiberModel(cfg, eager=eager)
