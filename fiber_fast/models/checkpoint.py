"""Checkpoints: foreign state dicts by explicit name maps (timm Swin, HF RoBERTa, official FIBER for a
``FiberModel``; ``bert-base-uncased`` and official Oscar for an ``OscarModel``), and our own safetensors
files with the config (and its family, ``fiber`` or ``oscar``) as metadata.

``load_pretrained`` maps every source key to a model key or to ``ignored`` (a key the map drops on
purpose: buffers the model recomputes, classifier/pooler weights FIBER does not use, FIBER's queues,
tied aliases); anything else is ``unexpected``. Relative-position tables of another window size are
resized by bicubic interpolation (FIBER's ``swin_adapt_position_encoding``). Other shape
mismatches raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import FiberConfig
from .oscar_config import OscarConfig

SOURCES = ("timm", "hf", "fiber")
OSCAR_SOURCES = ("bert", "oscar")
CONFIG_KEY = "fiber_config"
# The config class of a save_checkpoint file by its "config_family" metadata (absent: "fiber", older files).
FAMILY_KEY = "config_family"
CONFIG_FAMILIES: dict[str, type[FiberConfig] | type[OscarConfig]] = {"fiber": FiberConfig, "oscar": OscarConfig}
# A training run folder (fiber_fast.train writes it, fiber_fast.eval and --init read it): the final weights
# (save_checkpoint) and the run YAML as trained.
RUN_WEIGHTS = "model.safetensors"
RUN_CONFIG = "train_config.yaml"
_BUFFERS = ("relative_position_index", "attn_mask")
_I2T = ("qkv_text_i2t", "qkv_i2t", "proj_i2t", "alpha_i2t", "norm_i2t_i")
_FIBER_HEADS = {
    "cross_modal_text_transform.": "itm_head.text_transform.",
    "cross_modal_image_transform.": "itm_head.image_transform.",
    "cross_modal_text_pooler.": "itm_head.text_pooler.",
    "cross_modal_image_pooler.": "itm_head.image_pooler.",
    "itm_score.fc.": "itm_head.fc.",
    "cross_modal_text_transform_itc.": "itc_head.text_transform.",
    "cross_modal_image_transform_itc.": "itc_head.image_transform.",
    "cross_modal_text_pooler_itc.": "itc_head.text_pooler.",
    "cross_modal_image_pooler_itc.": "itc_head.image_pooler.",
    "mlm_score.transform.dense.": "mlm_head.dense.",
    "mlm_score.transform.LayerNorm.": "mlm_head.layer_norm.",
}
_FIBER_IGNORED = ("image_queue", "text_queue", "queue_ptr", "queue_total", "image_input_queue", "text_input_queue",
                  "text_input_mask_queue")

# A map returns the model key, or None to ignore the source key on purpose.
Target = str | None


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: model keys not provided (``missing``), source keys with no place in
    the model (``unexpected``), source keys dropped on purpose (``ignored``), and tables resized."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


class _UnmappedError(Exception):
    pass


def _swin_block_key(rest: str) -> Target:
    return None if rest.endswith(_BUFFERS) else rest


def _timm_key(key: str, model: nn.Module) -> Target:
    if key.startswith("head.") or key.endswith(_BUFFERS):
        return None
    if key.startswith(("patch_embed.", "layers.", "norm.")):
        return "image." + key
    raise _UnmappedError


def _hf_key(key: str, model: nn.Module) -> Target:
    key = key.removeprefix("roberta.")
    if key == "embeddings.position_ids" or key.startswith("pooler."):
        return None
    if key.startswith(("embeddings.", "encoder.layer.")):
        return "text." + key
    tied = model.config.tie_word_embeddings
    lm_head = {"lm_head.dense.weight": "mlm_head.dense.weight", "lm_head.dense.bias": "mlm_head.dense.bias",
               "lm_head.layer_norm.weight": "mlm_head.layer_norm.weight",
               "lm_head.layer_norm.bias": "mlm_head.layer_norm.bias", "lm_head.bias": "mlm_head.bias",
               "lm_head.decoder.bias": None,  # HF ties it to lm_head.bias
               "lm_head.decoder.weight": None if tied else "mlm_head.decoder.weight"}
    if key in lm_head:
        return lm_head[key]
    raise _UnmappedError


def _fiber_key(key: str, model: nn.Module) -> Target:
    if key in _FIBER_IGNORED or key.startswith("rank_output."):  # rank_output: a copy of itm_score.fc row 1
        return None
    if key == "temp":
        return "itc_head.temp"
    if key == "mlm_score.bias":
        return "mlm_head.bias"
    if key == "mlm_score.decoder.weight":
        return None if model.config.tie_word_embeddings else "mlm_head.decoder.weight"
    for prefix, target in _FIBER_HEADS.items():
        if key.startswith(prefix):
            return target + key[len(prefix):]
    if key.startswith("vit_model."):
        rest = key[len("vit_model."):]
        if rest.startswith("head.") or rest.endswith(_BUFFERS):
            return None
        # FIBER (official Swin) downsamples at the end of stage s, the model (timm) at the start of s + 1.
        rest = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", rest)
        rest = re.sub(r"(blocks\.\d+)\.attn\.(" + "|".join(_I2T) + r")\b", r"\1.fusion.\2", rest)
        return "image." + rest
    if key.startswith("text_transformer."):
        rest = key[len("text_transformer."):]
        if rest == "embeddings.position_ids" or rest.startswith("pooler."):
            return None
        match = re.match(r"^encoder\.layer\.(\d+)\.(alpha_t2i|crossattention_t2i\..*)$", rest)
        if match:
            # FIBER gives every layer an alpha_t2i; only the fused layers use it.
            if not hasattr(model.text.encoder.layer[int(match.group(1))], "fusion"):
                return None
            return f"text.encoder.layer.{match.group(1)}.fusion.{match.group(2)}"
        return "text." + rest
    raise _UnmappedError


_BERT_PARTS = ("embeddings.", "encoder.layer.", "pooler.")
_OSCAR_PARTS = (*_BERT_PARTS, "img_embedding.", "LayerNorm.")  # BertImgModel's region embedding (+ LayerNorm)
_BERT_HEADS = {"cls.predictions.": "mlm_head.", "cls.seq_relationship.": "relation_head."}
# Tied aliases (the decoder shares the word embeddings and the output bias) and buffers the model recomputes.
_BERT_IGNORED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
_BERT_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def _bert_family_key(key: str, parts: tuple[str, ...]) -> Target:
    """BERT-family names (``bert.`` prefix or none) -> ``OscarModel`` names; TF-converted ``LayerNorm.gamma`` /
    ``.beta`` (the released ``bert-base-uncased`` files) read as ``.weight`` / ``.bias``."""
    key = re.sub(r"(LayerNorm)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm)\.beta$", r"\1.bias", key))
    if key in _BERT_IGNORED or key.endswith(_BERT_BUFFERS):
        return None
    for prefix, target in _BERT_HEADS.items():
        if key.startswith(prefix):
            return target + key[len(prefix):]
    rest = key.removeprefix("bert.")
    if rest.startswith(parts):
        return "bert." + rest
    raise _UnmappedError


def _bert_key(key: str, model: nn.Module) -> Target:
    return _bert_family_key(key, _BERT_PARTS)


def _oscar_key(key: str, model: nn.Module) -> Target:
    return _bert_family_key(key, _OSCAR_PARTS)


_MAPS: dict[str, Callable[[str, nn.Module], Target]] = {"timm": _timm_key, "hf": _hf_key, "fiber": _fiber_key,
                                                        "bert": _bert_key, "oscar": _oscar_key}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch pickle (``.bin``/``.pt``/``.pth``/``.ckpt``, loaded with
    ``weights_only=True``); a ``state_dict``/``model`` entry of a training checkpoint is unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(data, Mapping) and wrapper in data and isinstance(data[wrapper], Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds no state dict (got {type(data).__name__})")
    return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}


def resize_relative_position_table(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``((2w-1)^2, nH)`` -> ``(rows, nH)`` by bicubic interpolation of the square ``(2w-1, 2w-1)`` grid."""
    source, target = round(table.shape[0] ** 0.5), round(rows ** 0.5)
    if source * source != table.shape[0] or target * target != rows:
        raise ValueError(f"relative_position_bias_table: square tables only, got {table.shape[0]} -> {rows} rows")
    grid = table.t().reshape(1, table.shape[1], source, source).float()
    grid = F.interpolate(grid, size=(target, target), mode="bicubic")
    return grid[0].permute(1, 2, 0).reshape(rows, table.shape[1]).to(table.dtype)


def load_pretrained(model: nn.Module, path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
                    source: str = "fiber") -> LoadReport:
    """Load a foreign checkpoint into ``model`` (a ``FiberModel`` or an ``OscarModel``) by name map.

    ``source`` for a ``FiberModel``: ``"timm"`` (timm Swin, e.g. ``swin_base_patch4_window12_384``),
    ``"hf"`` (HF RoBERTa, ``roberta-base`` naming with or without the ``roberta.`` prefix, ``.bin`` or
    ``.safetensors``) or ``"fiber"`` (the official FIBER coarse checkpoint: ``vit_model.*``,
    ``text_transformer.*`` and the heads of ``fiber_module.py``). For an ``OscarModel``: ``"bert"``
    (``bert-base-uncased`` / HF ``BertForPreTraining`` naming, ``bert.`` prefix or none,
    ``cls.predictions.*`` -> ``mlm_head``, ``cls.seq_relationship.*`` -> ``relation_head``; the region
    embedding is reported missing) or ``"oscar"`` (the same plus Oscar's ``bert.img_embedding.*`` and
    ``bert.LayerNorm.*``; a fine-tuned ``classifier.*`` is unexpected). Returns a ``LoadReport``;
    ``missing`` lists model keys the checkpoint did not provide (e.g. everything but the Swin for ``"timm"``).
    """
    sources = OSCAR_SOURCES if isinstance(getattr(model, "config", None), OscarConfig) else SOURCES
    if source not in sources:
        raise ValueError(f"source must be one of {sources} for a {type(model).__name__}, got {source!r}")
    state = read_state_dict(path_or_state_dict) if isinstance(path_or_state_dict, (str, Path)) else path_or_state_dict
    if not isinstance(state, Mapping):
        raise TypeError(f"path_or_state_dict must be a path or a mapping of tensors, got {type(state).__name__}")
    model_state = model.state_dict()
    report = LoadReport()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        try:
            target = _MAPS[source](key, model)
        except _UnmappedError:
            report.unexpected.append(key)
            continue
        if target is None:
            report.ignored.append(key)
            continue
        if target not in model_state:
            report.unexpected.append(key)
            continue
        expected = model_state[target].shape
        if key == "temp" and value.dim() == 0:
            value = value.reshape(1)
        if value.shape != expected and target.endswith("relative_position_bias_table") and value.shape[1:] == \
                expected[1:]:
            value = resize_relative_position_table(value, expected[0])
            report.resized.append(target)
        if value.shape != expected:
            raise ValueError(f"{key} (-> {target}) has shape {tuple(value.shape)}, the model expects {tuple(expected)}")
        mapped[target] = value
    model.load_state_dict(mapped, strict=False)
    owner = _tensor_owners(model)
    loaded = {owner.get(key, key) for key in mapped}
    report.missing = [key for key in model_state if owner.get(key, key) not in loaded]
    return report


def _tensor_owners(model: nn.Module) -> dict[str, str]:
    """State-dict key -> the first key of the same Parameter/buffer object (tied weights share one owner)."""
    first: dict[int, str] = {}
    owners = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        owners[name] = first.setdefault(id(tensor), name)
    return owners


def _own_tensor_names(model: nn.Module) -> set[str]:
    """State-dict names of ``model`` with each tied parameter once (the first name in module order)."""
    return {name for name, owner in _tensor_owners(model).items() if name == owner} & set(model.state_dict())


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s weights as safetensors with its config (JSON) and config family in the metadata.

    Tied weights are stored once. Every tensor is copied to its own storage first: a model whose
    parameters are views into one flat buffer (DeepSpeed ZeRO-1/2) saves like any other.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {path}")
    names = _own_tensor_names(model)
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()
               if key in names}
    family = next((name for name, cls in CONFIG_FAMILIES.items() if isinstance(model.config, cls)), None)
    if family is None:
        raise TypeError(f"model.config must be one of {[cls.__name__ for cls in CONFIG_FAMILIES.values()]}, got "
                        f"{type(model.config).__name__}")
    save_file(tensors, str(path), metadata={CONFIG_KEY: json.dumps(model.config.to_dict()), FAMILY_KEY: family})


def read_checkpoint_config(path: str | Path) -> FiberConfig | OscarConfig:
    """The config stored by ``save_checkpoint``: a ``FiberConfig`` or an ``OscarConfig`` by its family."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if CONFIG_KEY not in metadata:
        raise ValueError(f"{path} has no {CONFIG_KEY!r} metadata (not written by save_checkpoint)")
    family = metadata.get(FAMILY_KEY, "fiber")
    if family not in CONFIG_FAMILIES:
        raise ValueError(f"{path}: unknown {FAMILY_KEY} {family!r}, expected one of {sorted(CONFIG_FAMILIES)}")
    return CONFIG_FAMILIES[family].from_dict(json.loads(metadata[CONFIG_KEY]))


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a ``save_checkpoint`` file into ``model`` strictly: missing or unexpected keys raise ``RuntimeError``
    (as ``load_state_dict(strict=True)``), mis-shaped ones too, and so does a file of another config family."""
    from safetensors.torch import load_file

    stored = read_checkpoint_config(path)
    if type(stored) is not type(model.config):
        raise RuntimeError(f"{path} was saved with config class {type(stored).__name__}, the model's is "
                           f"{type(model.config).__name__}")
    state = load_file(str(path))
    expected = _own_tensor_names(model)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(f"{path} does not match the model: missing {missing[:8]} ({len(missing)}), "
                         f"unexpected {unexpected[:8]} ({len(unexpected)})")
    model.load_state_dict(state, strict=False)  # tied names not in the file share a loaded parameter
