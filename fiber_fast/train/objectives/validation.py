"""Argument checks shared by the objectives (ValueError/TypeError naming the argument and the form)."""

from __future__ import annotations

import torch


def check_features(**features: torch.Tensor) -> None:
    """Each ``(B, E)`` floating tensor, all of the same shape and device."""
    shape = None
    for name, value in features.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, E), got {type(value).__name__}")
        if value.dim() != 2 or not value.is_floating_point():
            raise ValueError(f"{name} must be a floating (B, E) tensor, got {value.dtype} {tuple(value.shape)}")
        if shape is None:
            shape, device, first = value.shape, value.device, name
        elif value.shape != shape or value.device != device:
            raise ValueError(f"{name} must match {first}: {tuple(shape)} on {device}, got {tuple(value.shape)} on "
                             f"{value.device}")


def check_ids(name: str, ids: torch.Tensor, batch: int, device: torch.device) -> None:
    """``(B,)`` int64 on ``device``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({batch},) int64, got {type(ids).__name__}")
    if ids.shape != (batch,) or ids.dtype != torch.int64 or ids.device != device:
        raise ValueError(f"{name} must be ({batch},) int64 on {device}, got {ids.dtype} {tuple(ids.shape)} on "
                         f"{ids.device}")
