"""``OscarConfig``: the OSCAR model (one BERT over words, object tags and region features), with presets.

``BertTextConfig`` uses HF ``BertConfig`` field names, so ``bert-base-uncased`` settings carry over
one to one. Round trip as ``FiberConfig``: ``to_dict`` / ``from_dict`` and ``save`` / ``load`` for
``.yaml``/``.yml``/``.json`` files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import BACKENDS, SavedConfig, check_text_encoder, preset_fields, reject_unknown_fields

RELATION_LABELS = (2, 3)


@dataclass
class BertTextConfig:
    """The BERT encoder (HF ``BertConfig`` argument names; defaults are ``bert-base-uncased``'s)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0


@dataclass
class OscarConfig(SavedConfig):
    """OSCAR (Oscar's ``BertImgModel`` + ``BertImgForPreTraining`` heads).

    Attributes:
        text: the BERT encoder.
        region_dim: width of one region feature (Oscar's ``img_feature_dim``): 2048 detector features
            + 6 box values (normalised x1, y1, x2, y2, w, h) = 2054.
        region_layer_norm, region_layer_norm_eps: a LayerNorm after the region projection (Oscar's
            ``use_img_layernorm`` / ``img_layer_norm_eps``; Oscar+ pre-trains with it on, eps 1e-12).
        relation_labels: classes of the [CLS] relation head: 2 (Oscar: 0 = original pair, 1 = polluted)
            or 3 (Oscar+: 0 = original, 1 = tags replaced, 2 = caption replaced).
        max_text_len: longest ``[CLS] words [SEP] tags [SEP]`` sequence the data pipeline builds
            (Oscar+ pre-training ``max_seq_length`` 35).
        max_regions: most region tokens per image the data pipeline keeps (Oscar's ``max_img_seq_length`` 50).
        backend: ``fiber_kernels`` backend of the fused attention (``build_oscar(cfg, eager=True)`` uses SDPA).
    """

    text: BertTextConfig = field(default_factory=BertTextConfig)
    region_dim: int = 2054
    region_layer_norm: bool = True
    region_layer_norm_eps: float = 1e-12
    relation_labels: int = 2
    max_text_len: int = 35
    max_regions: int = 50
    backend: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.text, dict):
            self.text = BertTextConfig(**self.text)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the configuration cannot be built."""
        text = self.text
        check_text_encoder(text)
        if text.type_vocab_size < 1:
            raise ValueError(f"text.type_vocab_size must be >= 1, got {text.type_vocab_size}")
        if self.region_dim < 1:
            raise ValueError(f"region_dim must be >= 1, got {self.region_dim}")
        if self.relation_labels not in RELATION_LABELS:
            raise ValueError(f"relation_labels must be one of {RELATION_LABELS}, got {self.relation_labels}")
        if not 1 <= self.max_text_len <= text.max_position_embeddings:
            raise ValueError(f"max_text_len must be in [1, text.max_position_embeddings = "
                             f"{text.max_position_embeddings}], got {self.max_text_len}")
        if self.max_regions < 0:
            raise ValueError(f"max_regions must be >= 0, got {self.max_regions}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> OscarConfig:
        """``"tiny"`` (CPU tests and demo: hidden 64, 2 layers of 2 heads of 32, vocabulary 512) or
        ``"base"`` (``bert-base-uncased``: 768 / 12 layers / 12 heads / 3072, vocabulary 30522, 512 positions).

        ``overrides`` replace top-level fields; ``text`` takes a dict of its fields.
        """
        base = preset_fields(PRESETS, name)
        text = {**base.pop("text"), **overrides.pop("text", {})}
        return cls.from_dict({**base, **overrides, "text": text})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OscarConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        data = dict(data)
        reject_unknown_fields(cls, data, "OscarConfig")
        text = data.pop("text", {})
        reject_unknown_fields(BertTextConfig, text, "OscarConfig.text")
        return cls(text=BertTextConfig(**text), **data)


PRESETS: dict[str, dict[str, Any]] = {
    # Head dim 32 (a fiber_kernels GPU head dim); region_dim stays Oscar's 2054 (override for small features).
    "tiny": {"text": {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 128, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
                      "attention_probs_dropout_prob": 0.0},
             "max_text_len": 32, "max_regions": 16},
    "base": {"text": {}},
}
