"""``FiberConfig``: one dataclass for the whole model (Swin + RoBERTa + fusion + heads), with presets.

Field names follow the libraries whose modules the model reuses: ``ImageConfig`` those of timm's
``SwinTransformer`` (``img_size, patch_size, embed_dim, depths, num_heads, window_size``) and
``TextConfig`` those of HF ``RobertaConfig``. Round trip: ``to_dict`` / ``from_dict`` and
``save`` / ``load`` for ``.yaml``/``.yml``/``.json`` files.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("coarse", "fine")
BACKENDS = ("auto", "triton", "cuda", "torch")
CHECKPOINTING = ("none", "mlp", "block")


def reject_unknown_fields(config_class: type, keys: Any, name: str) -> None:
    """``ValueError`` naming the keys of ``keys`` that are not fields of the dataclass ``config_class``."""
    unknown = set(keys) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        raise ValueError(f"unknown {name} fields {sorted(unknown)}")


def preset_fields(presets: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """A copy of the top-level fields of preset ``name``; an unknown name raises ``ValueError`` listing them."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return dict(presets[name])


def check_text_encoder(text: Any) -> None:
    """The checks every BERT-family text config (``TextConfig``, ``BertTextConfig``) needs: whole heads and a pad
    id inside the vocabulary; ``ValueError`` naming the ``text.`` field."""
    if text.hidden_size % text.num_attention_heads:
        raise ValueError(f"text.hidden_size {text.hidden_size} not divisible by text.num_attention_heads "
                         f"{text.num_attention_heads}")
    if not 0 <= text.pad_token_id < text.vocab_size:
        raise ValueError(f"text.pad_token_id {text.pad_token_id} outside the vocabulary ({text.vocab_size})")


def _file_format(path: Path) -> str:
    """``"json"`` or ``"yaml"`` by the suffix of ``path``; any other suffix raises ``ValueError``."""
    if path.suffix == ".json":
        return "json"
    if path.suffix in (".yaml", ".yml"):
        return "yaml"
    raise ValueError(f"path must end in .json, .yaml or .yml, got {path}")


class SavedConfig:
    """``to_dict`` / ``save`` / ``load`` of a nested config dataclass whose class has ``from_dict``
    (FiberConfig, OscarConfig): JSON or YAML by the file's suffix."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), JSON/YAML serialisable."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def save(self, path: str | Path) -> None:
        """Write ``.json`` or ``.yaml``/``.yml`` (by suffix)."""
        path = Path(path)
        if _file_format(path) == "json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        else:
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a file written by ``save``."""
        path = Path(path)
        if _file_format(path) == "json":
            return cls.from_dict(json.loads(path.read_text()))
        import yaml

        return cls.from_dict(yaml.safe_load(path.read_text()))


@dataclass
class ImageConfig:
    """The Swin image backbone (timm ``SwinTransformer`` argument names)."""

    img_size: int | tuple[int, int] = 384
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1

    @property
    def num_features(self) -> list[int]:
        """Channels of each stage: ``embed_dim * 2**s``."""
        return [self.embed_dim * 2 ** stage for stage in range(len(self.depths))]


@dataclass
class TextConfig:
    """The RoBERTa text backbone (HF ``RobertaConfig`` argument names).

    ``linear_init_std`` (not an HF name): std of the text backbone's linear weights at initialisation,
    0.02 as in FIBER/HF. A from-scratch model may raise it (the demo: 0.1): at 0.02 the attention
    branches are so small that the first-token state, FIBER's ITC text embedding, is the same for
    every caption (0.7% relative spread across captions in the tiny preset), and ITC cannot start.
    """

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    pad_token_id: int = 1
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    linear_init_std: float = 0.02


@dataclass
class FiberConfig(SavedConfig):
    """FIBER: fusion in the top ``fusion_layers`` layers of both backbones, and its heads.

    Attributes:
        image, text: the two backbones.
        stage: ``"coarse"`` (image-text pairs; the fixed-resolution Swin rule of the official Swin:
            a stage whose map at ``img_size`` is no larger than the window uses the map size as its
            window and never shifts) or ``"fine"`` (the detection variant: every stage keeps
            ``window_size`` and shifts every other block, maps are padded to window multiples,
            then shifted). Both pad any ``H x W`` input to the patch and window multiples.
        fusion_layers: how many top layers fuse: the last ``fusion_layers`` Swin blocks (they must
            lie in the last two stages) pair with the last ``fusion_layers`` RoBERTa layers.
        last_text_layer_norm: False reproduces FIBER's coarse model, whose last text layer skips its
            output LayerNorm in fused passes (``last_norm=False`` in ``fiber_module.py``); dual-encoder
            passes (``fusion=False``) always apply it, as FIBER's text-only path does.
        max_text_len: the longest caption the data pipeline produces (40 in FIBER pre-training).
        detection_head: build the per-stage feature norms, FPN and ATSS vision-language head.
        tie_word_embeddings: the MLM decoder shares the word-embedding matrix (FIBER's own
            ``MLMHead`` has an untied decoder: set False to load it).
        backend: ``fiber_kernels`` backend of the fused model (``build_fiber(cfg, eager=True)``
            always uses ``"torch"``).
        fpn_channels, head_convs, head_groups, prior_prob, log_scale: the grounding head (GLIP's
            ``OUT_CHANNELS``, ``NUM_CONVS``, GroupNorm groups, ``PRIOR_PROB``, ``LOG_SCALE``).
        anchor_scale: anchor side = ``anchor_scale * stride`` (8: sizes 64-1024 on P3-P7).
        activation_checkpointing: memory saving in training (``torch.utils.checkpoint``, non-reentrant,
            RNG state preserved, so losses and gradients are unchanged): ``"none"``; ``"mlp"`` recomputes
            each Swin block's ``norm2`` + MLP in the backward; ``"block"`` recomputes every Swin block
            (attention, fusion branch, MLP) and keeps only its input.
        text_checkpointing: the same for the text side: True recomputes every RoBERTa layer (attention,
            its text->image fusion branch, feed-forward, LayerNorms) in the backward and keeps only its
            input; independent of ``activation_checkpointing`` (which covers the Swin blocks).
    """

    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    stage: str = "coarse"
    fusion_layers: int = 6
    last_text_layer_norm: bool = False
    max_text_len: int = 40
    detection_head: bool = False
    tie_word_embeddings: bool = True
    backend: str = "auto"
    fpn_channels: int = 256
    head_convs: int = 4
    head_groups: int = 32
    prior_prob: float = 0.01
    log_scale: float = 0.0
    anchor_scale: float = 8.0
    activation_checkpointing: str = "none"
    text_checkpointing: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image, dict):
            self.image = ImageConfig(**self.image)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        self.image.depths = tuple(self.image.depths)
        self.image.num_heads = tuple(self.image.num_heads)
        if isinstance(self.image.img_size, list):
            self.image.img_size = tuple(self.image.img_size)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the configuration cannot be built."""
        image, text = self.image, self.text
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.activation_checkpointing not in CHECKPOINTING:
            raise ValueError(f"activation_checkpointing must be one of {CHECKPOINTING}, got "
                             f"{self.activation_checkpointing!r}")
        if not isinstance(self.text_checkpointing, bool):
            raise TypeError(f"text_checkpointing must be a bool, got {type(self.text_checkpointing).__name__}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if len(image.depths) != len(image.num_heads) or len(image.depths) < 3:
            raise ValueError(f"image.depths and image.num_heads need one entry per stage (at least 3 stages), got "
                             f"{image.depths} and {image.num_heads}")
        for stage, (dim, heads) in enumerate(zip(image.num_features, image.num_heads, strict=True)):
            if dim % heads:
                raise ValueError(f"stage {stage}: channels {dim} not divisible by image.num_heads[{stage}] = {heads}")
        check_text_encoder(text)
        fusable = image.depths[-1] + image.depths[-2]
        if not 1 <= self.fusion_layers <= min(fusable, text.num_hidden_layers):
            raise ValueError(f"fusion_layers must be in [1, {min(fusable, text.num_hidden_layers)}] (the blocks of the "
                             f"last two Swin stages and the text layers), got {self.fusion_layers}")
        if self.max_text_len > self.max_positions:
            raise ValueError(f"max_text_len {self.max_text_len} exceeds the position table "
                             f"(text.max_position_embeddings {text.max_position_embeddings} - pad_token_id - 1 = "
                             f"{self.max_positions})")
        if self.detection_head and self.fpn_channels % self.head_groups:
            raise ValueError(f"fpn_channels {self.fpn_channels} not divisible by head_groups {self.head_groups}")

    @property
    def max_positions(self) -> int:
        """The longest text the RoBERTa position table takes (positions start after the pad id)."""
        return self.text.max_position_embeddings - self.text.pad_token_id - 1

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> FiberConfig:
        """``"tiny"`` (CPU tests and demo), ``"base-coarse"`` (Swin-B 384² + RoBERTa-base, FIBER
        pre-training) or ``"base-fine"`` (the same at 800x1333, text up to 256, detection head).

        ``overrides`` replace top-level fields; ``image``/``text`` take dicts of their fields. A
        ``stage`` override also moves the stage defaults (``detection_head``, ``last_text_layer_norm``)
        unless those are given too.
        """
        base = preset_fields(PRESETS, name)
        stage = overrides.get("stage", base["stage"])
        base.setdefault("detection_head", stage == "fine")
        base.setdefault("last_text_layer_norm", stage == "fine")
        if "stage" in overrides:
            base["detection_head"] = stage == "fine"
            base["last_text_layer_norm"] = stage == "fine"
        image = {**base.pop("image"), **overrides.pop("image", {})}
        text = {**base.pop("text"), **overrides.pop("text", {})}
        reject_unknown_fields(cls, overrides, "FiberConfig")
        return cls(image=ImageConfig(**image), text=TextConfig(**text), **{**base, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FiberConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        data = dict(data)
        reject_unknown_fields(cls, data, "FiberConfig")
        return cls(image=ImageConfig(**data.pop("image", {})), text=TextConfig(**data.pop("text", {})), **data)


_SWIN_B = {"img_size": 384, "patch_size": 4, "embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32),
           "window_size": 12, "drop_path_rate": 0.1}
PRESETS: dict[str, dict[str, Any]] = {
    # A few M parameters: head dim 32 on both sides (the kernels' GPU head dim); 3 fused layers so
    # that both the stage-3 (128-d) and stage-4 (256-d) text->image projections exist, as in FIBER.
    "tiny": {"image": {"img_size": 64, "patch_size": 4, "embed_dim": 32, "depths": (2, 2, 4, 2),
                       "num_heads": (1, 2, 4, 8), "window_size": 4, "drop_path_rate": 0.0},
             "text": {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                      "intermediate_size": 128, "max_position_embeddings": 66, "hidden_dropout_prob": 0.0,
                      "attention_probs_dropout_prob": 0.0},
             "stage": "coarse", "fusion_layers": 3, "max_text_len": 32, "fpn_channels": 32, "head_convs": 2,
             "head_groups": 8},
    "base-coarse": {"image": _SWIN_B, "text": {}, "stage": "coarse", "fusion_layers": 6, "max_text_len": 40},
    "base-fine": {"image": {**_SWIN_B, "img_size": (800, 1333), "drop_path_rate": 0.4}, "text": {}, "stage": "fine",
                  "fusion_layers": 6, "max_text_len": 256},
}
