"""OSCAR: one BERT over ``[CLS] words [SEP] tags [SEP]`` followed by region tokens, on HF transformers' modules.

Module names are Oscar's (``bert.embeddings``, ``bert.encoder.layer.{i}`` with HF ``BertLayer``
parameter names, ``bert.pooler``, ``bert.img_embedding``, ``bert.LayerNorm``), so ``bert-base-uncased``
and official Oscar state dicts map by name (``load_pretrained(..., source="bert" | "oscar")``).
Region tokens get no position or token-type embedding (as Oscar's ``BertImgModel``). Every
``BertLayer`` runs HF's own forward; only its attention function differs between the two builds:
``fiber_kernels.cross_attention`` (one query group, the joint text + region key-padding mask) on the
fused model, ``torch.nn.functional.scaled_dot_product_attention`` with a bool mask on the eager one.

Relation labels (``relation_head``; Oscar's ``cls.seq_relationship``, Oscar+'s ``oscar_tsv.py``):
0 = the original (caption, tags, regions) triple; 1 = polluted: with ``relation_labels=2`` any
replacement, with 3 the tags replaced by another image's; 2 = the caption replaced (3-way only).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import torch
from fiber_kernels.cross_attention import cross_attention
from torch import nn
from transformers import BertConfig
from transformers.modeling_utils import AttentionInterface
from transformers.models.bert.modeling_bert import BertEmbeddings, BertEncoder, BertLMPredictionHead, BertPooler

from .model import _init_weights
from .oscar_config import OscarConfig
from .oscar_inputs import check_oscar_inputs

FUSED_ATTENTION = "fiber_cross_attention"


def _fused_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor, scaling: float | None = None, dropout: float = 0.0, *,
                     fiber_backend: str = "auto", **_: object) -> tuple[torch.Tensor, None]:
    """HF attention-interface function: q, k, v ``(B, H, N, D)``, ``attention_mask`` bool ``(B, N)`` True =
    padding -> ``((B, N, H, D), None)``. No dropout on the attention probabilities (the kernel has none)."""
    out = cross_attention(query, key, value, attention_mask, scaling, backend=fiber_backend)
    return out.transpose(1, 2), None


AttentionInterface.register(FUSED_ATTENTION, _fused_attention)


def bert_config(cfg: OscarConfig, attn_implementation: str) -> BertConfig:
    """The HF ``BertConfig`` of ``cfg.text`` with the given attention implementation."""
    text = cfg.text
    config = BertConfig(vocab_size=text.vocab_size, hidden_size=text.hidden_size,
                        num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
                        intermediate_size=text.intermediate_size, hidden_act=text.hidden_act,
                        hidden_dropout_prob=text.hidden_dropout_prob,
                        attention_probs_dropout_prob=text.attention_probs_dropout_prob,
                        max_position_embeddings=text.max_position_embeddings, type_vocab_size=text.type_vocab_size,
                        initializer_range=text.initializer_range, layer_norm_eps=text.layer_norm_eps,
                        pad_token_id=text.pad_token_id)
    config._attn_implementation = attn_implementation
    return config


@dataclass
class OscarOutput:
    """sequence ``(B, T + R, hidden)``: text positions then region positions (padded rows hold finite values);
    pooled ``(B, hidden)``: ``tanh(dense(sequence[:, 0]))`` (BERT's pooler on [CLS]);
    attention_mask ``(B, T + R)`` int64 0/1: the joint mask the layers used (1 = real token or region)."""

    sequence: torch.Tensor
    pooled: torch.Tensor
    attention_mask: torch.Tensor


class OscarBert(nn.Module):
    """Oscar's ``BertImgModel``: BERT embeddings, encoder and pooler, and the region embedding
    ``dropout(LayerNorm?(img_embedding(features)))``."""

    def __init__(self, cfg: OscarConfig, attn_implementation: str) -> None:
        super().__init__()
        self.config = bert_config(cfg, attn_implementation)
        hidden = cfg.text.hidden_size
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = BertEncoder(self.config)
        self.pooler = BertPooler(self.config)
        self.img_embedding = nn.Linear(cfg.region_dim, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=cfg.region_layer_norm_eps) if cfg.region_layer_norm else None
        self.dropout = nn.Dropout(cfg.text.hidden_dropout_prob)

    def embed_regions(self, region_features: torch.Tensor) -> torch.Tensor:
        """``(B, R, region_dim)`` float (cast to the projection's dtype) -> ``(B, R, hidden)``."""
        regions = self.img_embedding(region_features.to(self.img_embedding.weight.dtype))
        if self.LayerNorm is not None:
            regions = self.LayerNorm(regions)
        return self.dropout(regions)


class OscarModel(nn.Module):
    """OSCAR with its pre-training heads. Build with ``build_oscar``.

    ``mlm_head``: HF ``BertLMPredictionHead`` (Oscar's ``cls.predictions``: transform dense + GELU +
    LayerNorm, decoder tied to the word embeddings, output bias) ``(B, N, hidden) -> (B, N, vocab)``.
    ``relation_head``: ``nn.Linear(hidden, cfg.relation_labels)`` on ``pooled`` (``cls.seq_relationship``).
    The fused and eager builds have the same state-dict keys.
    """

    def __init__(self, cfg: OscarConfig, eager: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.eager = eager
        self.bert = OscarBert(cfg, "sdpa" if eager else FUSED_ATTENTION)
        self.mlm_head = BertLMPredictionHead(self.bert.config)
        self.mlm_head.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.mlm_head.decoder.bias = self.mlm_head.bias
        self.relation_head = nn.Linear(cfg.text.hidden_size, cfg.relation_labels)
        init = partial(_init_weights, linear_std=cfg.text.initializer_range)
        for module in (self.mlm_head, self.relation_head, self.bert):  # bert last: the tied word embeddings
            module.apply(init)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor,
                region_features: torch.Tensor, region_mask: torch.Tensor) -> OscarOutput:
        """input_ids, token_type_ids ``(B, T)`` int64 (positions 0..T-1, types as given: Oscar uses 0 for the
        caption, 1 for the tags); attention_mask ``(B, T)`` 0/1; region_features ``(B, R, region_dim)``
        float; region_mask ``(B, R)`` bool, True = real region. Returns ``OscarOutput``."""
        check_oscar_inputs(self.config, input_ids, token_type_ids, attention_mask, region_features, region_mask)
        text = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        hidden = torch.cat([text, self.bert.embed_regions(region_features)], dim=1)
        padding = torch.cat([attention_mask == 0, ~region_mask], dim=1)
        if self.eager:
            # SDPA's bool mask (True = attend); a row without any real key attends to all (finite, not NaN)
            allowed = ~padding | padding.all(dim=1, keepdim=True)
            hidden = self.bert.encoder(hidden, attention_mask=allowed[:, None, None, :]).last_hidden_state
        else:
            hidden = self.bert.encoder(hidden, attention_mask=padding,
                                       fiber_backend=self.config.backend).last_hidden_state
        return OscarOutput(sequence=hidden, pooled=self.bert.pooler(hidden), attention_mask=(~padding).long())


def build_oscar(cfg: OscarConfig, eager: bool = False) -> OscarModel:
    """The fused model (``eager=False``: ``fiber_kernels.cross_attention`` on ``cfg.backend``) or the eager
    one (SDPA). The fused attention applies no dropout to attention probabilities: a warning says so
    when ``cfg.text.attention_probs_dropout_prob > 0`` (the eager model applies it in training).

    Works under ``torch.device("meta")`` (no data touched)."""
    if not isinstance(cfg, OscarConfig):
        raise TypeError(f"cfg must be an OscarConfig, got {type(cfg).__name__}")
    if not eager and cfg.text.attention_probs_dropout_prob > 0:
        warnings.warn(f"the fused OSCAR attention has no dropout on attention probabilities; "
                      f"text.attention_probs_dropout_prob = {cfg.text.attention_probs_dropout_prob} applies to "
                      f"build_oscar(cfg, eager=True) only", stacklevel=2)
    return OscarModel(cfg, eager=eager)
