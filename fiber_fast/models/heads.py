"""FIBER's pre-training heads (``fiber_module.py`` / ``heads.py`` of microsoft/FIBER).

- ITC: ``cross_modal_{image,text}_transform_itc`` (to the text width ``E``), ``Pooler`` (dense +
  tanh), L2 normalisation and the learnable temperature ``temp`` (0.07, clamped to [0.001, 1]).
- ITM: ``cross_modal_{image,text}_transform`` + poolers on the fused outputs, ``fc`` on
  ``[text, image]`` (index 1 = match).
- MLM: the cross-modal text transform, then dense + GELU + LayerNorm + decoder + bias (RoBERTa's
  LM head layout), the decoder tied to the word embeddings unless ``tie_word_embeddings=False``.
Pooling commutes with FIBER's token-wise linear transforms, so the heads work on pooled embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .outputs import FiberOutput

TEMPERATURE_INIT = 0.07
TEMPERATURE_RANGE = (0.001, 1.0)


class Pooler(nn.Module):
    """``tanh(dense(x))`` on a pooled ``(B, E)`` vector (FIBER's ``Pooler`` after its first-token pick)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class _PooledPair(nn.Module):
    """FIBER's per-head pair of ``transform`` (Linear to ``embed_dim``) + ``Pooler`` for each stream; the
    ITC and ITM heads each own one (same parameter names as FIBER's cross-modal transforms/poolers)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.image_transform = nn.Linear(image_dim, embed_dim)
        self.text_transform = nn.Linear(text_dim, embed_dim)
        self.image_pooler = Pooler(embed_dim)
        self.text_pooler = Pooler(embed_dim)

    def pooled(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B_i, C)``, ``(B_t, D)`` -> ``tanh`` pooled ``(B_i, E)``, ``(B_t, E)``."""
        return (self.image_pooler(self.image_transform(image_embeds)),
                self.text_pooler(self.text_transform(text_embeds)))


class ITCHead(_PooledPair):
    """Image-text contrastive projections. ``temp`` has shape (1,) (DeepSpeed rejects 0-dim parameters)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        super().__init__(image_dim, text_dim, embed_dim)
        self.temp = nn.Parameter(torch.full((1,), TEMPERATURE_INIT))

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B_i, C)``, ``(B_t, D)`` -> L2-normalised ``(B_i, E)``, ``(B_t, E)`` and ``logit_scale`` (1,).

        ``logit_scale = 1 / temp`` with ``temp`` clamped to [0.001, 1] in value only (the gradient
        passes as if unclamped, like FIBER's in-place ``temp.clamp_`` before use).
        """
        image, text = self.pooled(image_embeds, text_embeds)
        temp = self.temp + (self.temp.clamp(*TEMPERATURE_RANGE) - self.temp).detach()
        return F.normalize(image, dim=-1), F.normalize(text, dim=-1), 1.0 / temp


class ITMHead(_PooledPair):
    """Image-text matching on the fused pooled outputs: ``(M, 2)`` logits, index 1 = match."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        super().__init__(image_dim, text_dim, embed_dim)
        self.fc = nn.Linear(2 * embed_dim, 2)

    def forward(self, out: FiberOutput) -> torch.Tensor:
        image, text = self.pooled(out.image_embeds, out.text_embeds)
        return self.fc(torch.cat([text, image], dim=-1))


class MLMHead(nn.Module):
    """Masked-LM logits ``(B, T, V)`` from text tokens ``(B, T, D)``.

    ``text_transform`` is the ITM head's ``cross_modal_text_transform`` (FIBER feeds the MLM head the
    transformed tokens); it is held without registering it here, so it has one state-dict name.
    """

    def __init__(self, text_transform: nn.Linear, vocab_size: int, layer_norm_eps: float,
                 word_embeddings: nn.Embedding | None) -> None:
        super().__init__()
        dim = text_transform.out_features
        object.__setattr__(self, "_text_transform", text_transform)
        self.dense = nn.Linear(dim, dim)
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        if word_embeddings is not None:
            if word_embeddings.weight.shape != self.decoder.weight.shape:
                raise ValueError(f"tied decoder needs word embeddings of shape {tuple(self.decoder.weight.shape)}, got "
                                 f"{tuple(word_embeddings.weight.shape)}")
            self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, text_tokens: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(F.gelu(self.dense(self._text_transform(text_tokens))))
        return self.decoder(x) + self.bias
