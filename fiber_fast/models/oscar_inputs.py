"""Argument checks of ``OscarModel.forward``: errors name the argument and the expected shape/dtype/device.

Values are not read (no device sync): ids outside the vocabulary fail in the embedding lookup."""

from __future__ import annotations

import torch

from .inputs import MASK_DTYPES
from .oscar_config import OscarConfig


def _tensor(name: str, value: object, shape_doc: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(value).__name__}")
    return value


def _same_shape(name: str, value: torch.Tensor, shape: tuple[int, ...], shape_doc: str) -> None:
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape_doc} = {shape}, got {tuple(value.shape)}")


def check_oscar_inputs(cfg: OscarConfig, input_ids: object, token_type_ids: object, attention_mask: object,
                       region_features: object, region_mask: object) -> None:
    """input_ids / token_type_ids int64 ``(B, T)`` with ``1 <= T <= text.max_position_embeddings``;
    attention_mask ``(B, T)`` int64/int32/bool 0/1; region_features floating ``(B, R, region_dim)``
    (``R >= 0``); region_mask bool ``(B, R)``; all on one device. Raises ``TypeError`` / ``ValueError``."""
    input_ids = _tensor("input_ids", input_ids, "(B, T) int64")
    if input_ids.dtype != torch.int64:
        raise TypeError(f"input_ids must be int64 (B, T), got {input_ids.dtype}")
    if input_ids.dim() != 2 or min(input_ids.shape) < 1:
        raise ValueError(f"input_ids must have shape (B, T) with B, T >= 1, got {tuple(input_ids.shape)}")
    batch, length = input_ids.shape
    if length > cfg.text.max_position_embeddings:
        raise ValueError(f"input_ids has {length} tokens, more than the position table takes "
                         f"(text.max_position_embeddings = {cfg.text.max_position_embeddings})")
    token_type_ids = _tensor("token_type_ids", token_type_ids, "(B, T) int64")
    if token_type_ids.dtype != torch.int64:
        raise TypeError(f"token_type_ids must be int64 (B, T), got {token_type_ids.dtype}")
    _same_shape("token_type_ids", token_type_ids, (batch, length), "(B, T)")
    attention_mask = _tensor("attention_mask", attention_mask, "(B, T) of 0/1")
    if attention_mask.dtype not in MASK_DTYPES:
        raise TypeError(f"attention_mask must be int64, int32 or bool (B, T) of 0/1, got {attention_mask.dtype}")
    _same_shape("attention_mask", attention_mask, (batch, length), "(B, T)")
    region_doc = f"(B, R, region_dim = {cfg.region_dim})"
    region_features = _tensor("region_features", region_features, f"{region_doc} float")
    if not region_features.is_floating_point():
        raise TypeError(f"region_features must be floating point {region_doc}, got {region_features.dtype}")
    if region_features.dim() != 3 or region_features.shape[2] != cfg.region_dim:
        raise ValueError(f"region_features must have shape {region_doc}, got {tuple(region_features.shape)}")
    if region_features.shape[0] != batch:
        raise ValueError(f"region_features and input_ids must have the same batch size B, got "
                         f"{region_features.shape[0]} and {batch}")
    region_mask = _tensor("region_mask", region_mask, "(B, R) bool")
    if region_mask.dtype != torch.bool:
        raise TypeError(f"region_mask must be bool (B, R), True = real region, got {region_mask.dtype}")
    _same_shape("region_mask", region_mask, tuple(region_features.shape[:2]), "(B, R)")
    named = {"token_type_ids": token_type_ids, "attention_mask": attention_mask, "region_features": region_features,
             "region_mask": region_mask}
    for name, value in named.items():
        if value.device != input_ids.device:
            raise ValueError(f"{name} must be on input_ids' device {input_ids.device}, got {value.device}")
