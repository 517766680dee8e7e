"""FIBER's RoBERTa text backbone on HF transformers' modules, with the text->image fusion branch.

Module names are HF ``RobertaModel``'s (``embeddings``, ``encoder.layer.{i}``), so ``roberta-base``
state dicts load by name. Unfused layers run HF's own ``RobertaLayer.forward``. A fused layer
(``FusedTextLayer.forward``) differs from it where FIBER's does: the self-attention's ``dense``
output goes through ``fusion`` (``fiber_kernels.modules.TextToImageFusion``) *before* its
LayerNorm, and with ``last_norm=False`` the output LayerNorm is skipped (FIBER's coarse quirk).
"""

from __future__ import annotations

import torch
from fiber_kernels.modules import TextToImageFusion
from torch import nn
from transformers import RobertaConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings, RobertaLayer

from .config import FiberConfig


def hf_config(cfg: FiberConfig, attn_implementation: str) -> RobertaConfig:
    """The HF ``RobertaConfig`` of ``cfg.text`` with the given attention implementation."""
    text = cfg.text
    config = RobertaConfig(vocab_size=text.vocab_size, hidden_size=text.hidden_size,
                           num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
                           intermediate_size=text.intermediate_size,
                           max_position_embeddings=text.max_position_embeddings, pad_token_id=text.pad_token_id,
                           type_vocab_size=text.type_vocab_size, layer_norm_eps=text.layer_norm_eps,
                           hidden_act=text.hidden_act, hidden_dropout_prob=text.hidden_dropout_prob,
                           attention_probs_dropout_prob=text.attention_probs_dropout_prob)
    config._attn_implementation = attn_implementation
    return config


def fused_layer_forward(layer: RobertaLayer, hidden: torch.Tensor, mask: torch.Tensor | None,
                        image: torch.Tensor, last_norm: bool = True) -> torch.Tensor:
    """FIBER's fused ``RobertaLayer``: ``(B, T, D)`` text, ``(B, L, C_img)`` previous-layer image tokens.

    ``mask`` is the layer's self-attention mask as ``create_bidirectional_mask`` builds it.
    """
    context, _ = layer.attention.self(hidden, attention_mask=mask)
    self_output = layer.attention.output
    attention_output = self_output.dropout(self_output.dense(context))
    attention_output = layer.fusion(attention_output, image)
    attention_output = self_output.LayerNorm(attention_output + hidden)
    output = layer.output.dropout(layer.output.dense(layer.intermediate(attention_output))) + attention_output
    return layer.output.LayerNorm(output) if last_norm else output


class RobertaEncoderLayers(nn.Module):
    """``layer``: the ``RobertaLayer`` list (HF's ``RobertaEncoder`` names)."""

    def __init__(self, layers: list[RobertaLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class TextBackbone(nn.Module):
    """RoBERTa embeddings and layers; the top ``cfg.fusion_layers`` layers carry ``fusion``.

    ``image_dims[i]``: channels of the image tokens text layer ``i`` attends to (None if unfused).
    """

    def __init__(self, cfg: FiberConfig, image_dims: list[int | None], attn_implementation: str) -> None:
        super().__init__()
        self.config = hf_config(cfg, attn_implementation)
        self.embeddings = RobertaEmbeddings(self.config)
        layers = []
        for index, dim_image in enumerate(image_dims):
            layer = RobertaLayer(self.config, layer_idx=index)
            if dim_image is not None:
                layer.fusion = TextToImageFusion(cfg.text.hidden_size, cfg.text.num_attention_heads, dim_image,
                                                 layer_norm_eps=cfg.text.layer_norm_eps)
            layers.append(layer)
        self.encoder = RobertaEncoderLayers(layers)

    def attention_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The self-attention mask of HF's implementation in use, from a ``(B, T)`` 0/1 mask."""
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
