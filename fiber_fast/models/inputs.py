"""Argument checks at the model boundary: errors name the argument and the expected shape/dtype/device."""

from __future__ import annotations

import torch

MASK_DTYPES = (torch.int64, torch.int32, torch.bool)


def check_pixel_values(pixel_values: object, in_chans: int) -> torch.Tensor:
    """``(B, in_chans, H, W)`` floating point."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor (B, {in_chans}, H, W), got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be floating point (B, {in_chans}, H, W), got {pixel_values.dtype}")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != in_chans:
        raise ValueError(f"pixel_values must have shape (B, {in_chans}, H, W), got {tuple(pixel_values.shape)}")
    if min(pixel_values.shape) < 1:
        raise ValueError(f"pixel_values must be non-empty (B, {in_chans}, H, W), got {tuple(pixel_values.shape)}")
    return pixel_values


def check_text(input_ids: object, attention_mask: object, max_positions: int) -> None:
    """input_ids int64 ``(B, T)`` with ``1 <= T <= max_positions``; attention_mask ``(B, T)`` int64/int32/bool 0/1.

    Values are not read (no device sync): ids outside the vocabulary fail in the embedding lookup."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor (B, T) int64, got {type(input_ids).__name__}")
    if input_ids.dtype != torch.int64:
        raise TypeError(f"input_ids must be int64 (B, T), got {input_ids.dtype}")
    if input_ids.dim() != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must have shape (B, T) with B, T >= 1, got {tuple(input_ids.shape)}")
    if input_ids.shape[1] > max_positions:
        raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, more than the position table takes "
                         f"({max_positions} = text.max_position_embeddings - pad_token_id - 1)")
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor (B, T) of 0/1, got {type(attention_mask).__name__}")
    if attention_mask.dtype not in MASK_DTYPES:
        raise TypeError(f"attention_mask must be int64, int32 or bool (B, T) of 0/1, got {attention_mask.dtype}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
                         f"{tuple(attention_mask.shape)}")
    if attention_mask.device != input_ids.device:
        raise ValueError(f"attention_mask must be on input_ids' device {input_ids.device}, got {attention_mask.device}")


def check_same_batch(image_batch: int, text_batch: int, image_name: str, text_name: str) -> None:
    if image_batch != text_batch:
        raise ValueError(f"{image_name} and {text_name} must have the same batch size, got {image_batch} and "
                         f"{text_batch}")
