"""Batching: tokenisation, padding, and the box x token positive map (the batch formats of API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

SIZE_DIVISIBILITY = 32


def tokenize(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], max_text_len: int,
             offsets: bool = False) -> dict[str, torch.Tensor]:
    """Tokenise with special tokens, truncate to ``max_text_len``, pad to the batch's longest.

    Returns ``input_ids``/``attention_mask`` ``(B, T)`` int64 and, with ``offsets``, ``offset_mapping``
    ``(B, T, 2)`` int64 character spans (``(0, 0)`` for special and padding tokens).
    """
    if max_text_len < 3:
        raise ValueError(f"max_text_len must be >= 3 (<s>, one token, </s>), got {max_text_len}")
    if offsets and not getattr(tokenizer, "is_fast", False):
        raise TypeError("the positive map needs a fast tokenizer (return_offsets_mapping); got "
                        f"{type(tokenizer).__name__}")
    encoded = tokenizer(list(captions), padding="longest", truncation=True, max_length=max_text_len,
                        return_offsets_mapping=offsets, return_tensors="pt")
    out = {"input_ids": encoded["input_ids"].long(), "attention_mask": encoded["attention_mask"].long()}
    if offsets:
        out["offset_mapping"] = encoded["offset_mapping"].long()
    return out


def positive_map(offset_mapping: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
    """Box x token map: 1 where a token's character span overlaps one of the box's phrase spans.

    ``offset_mapping``: ``(T, 2)`` int64 token spans ``[start, end)`` (empty for special/padding tokens);
    ``spans``: per box, its ``[start, end)`` character spans. Returns ``(G, T)`` float32 0/1.
    """
    starts, ends = offset_mapping[:, 0], offset_mapping[:, 1]
    real = ends > starts
    out = torch.zeros(len(spans), offset_mapping.shape[0], dtype=torch.float32)
    for box, box_spans in enumerate(spans):
        for begin, end in box_spans:
            out[box] += (real & (starts < end) & (ends > begin)).float()
    return out.clamp_(max=1.0)


def collate_coarse(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                   max_text_len: int = 40) -> dict[str, torch.Tensor]:
    """Image-caption items -> ``pixel_values (B, 3, H, W)`` float32, ``input_ids``/``attention_mask``
    ``(B, T)`` int64 (T = longest caption in the batch, <= ``max_text_len``), ``image_ids (B,)`` int64."""
    if not samples:
        raise ValueError("collate_coarse needs at least one sample")
    pixels = [s["pixel_values"] for s in samples]
    if any(p.shape != pixels[0].shape for p in pixels):
        raise ValueError(f"coarse images must share one size, got {sorted({tuple(p.shape) for p in pixels})}")
    text = tokenize(tokenizer, [s["caption"] for s in samples], max_text_len)
    return {"pixel_values": torch.stack(pixels).float(), **text,
            "image_ids": torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.int64)}


def collate_fine(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                 max_text_len: int = 256) -> dict[str, torch.Tensor]:
    """Image-caption-box items -> the fine batch.

    ``pixel_values (B, 3, Hp, Wp)`` float32 zero-padded to a multiple of 32, ``pixel_mask (B, Hp, Wp)``
    bool (True = real), ``image_sizes (B, 2)`` int64 (h, w), ``input_ids``/``attention_mask (B, T)``
    int64, ``boxes (B, G, 4)`` float32 xyxy, ``box_mask (B, G)`` bool, ``positive_map (B, G, T)``
    float32, ``image_ids (B,)`` int64. A box whose phrase lies wholly in the truncated part of its
    caption has no token left to align with and is left out of the batch.
    """
    if not samples:
        raise ValueError("collate_fine needs at least one sample")
    sizes = [tuple(s["pixel_values"].shape[-2:]) for s in samples]
    height = -(-max(h for h, _ in sizes) // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    width = -(-max(w for _, w in sizes) // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    pixels = torch.zeros(len(samples), 3, height, width, dtype=torch.float32)
    pixel_mask = torch.zeros(len(samples), height, width, dtype=torch.bool)
    for i, (sample, (h, w)) in enumerate(zip(samples, sizes, strict=True)):
        pixels[i, :, :h, :w] = sample["pixel_values"]
        pixel_mask[i, :h, :w] = True
    text = tokenize(tokenizer, [s["caption"] for s in samples], max_text_len, offsets=True)
    offsets = text.pop("offset_mapping")
    maps, kept = [], []
    for i, sample in enumerate(samples):
        rows = positive_map(offsets[i], sample["tokens_positive"])
        keep = rows.sum(dim=1) > 0
        maps.append(rows[keep])
        kept.append(sample["boxes"].reshape(-1, 4)[keep])
    boxes_per_image = max(len(b) for b in kept)
    tokens = offsets.shape[1]
    boxes = torch.zeros(len(samples), boxes_per_image, 4, dtype=torch.float32)
    box_mask = torch.zeros(len(samples), boxes_per_image, dtype=torch.bool)
    positives = torch.zeros(len(samples), boxes_per_image, tokens, dtype=torch.float32)
    for i, (image_boxes, rows) in enumerate(zip(kept, maps, strict=True)):
        boxes[i, :len(image_boxes)] = image_boxes
        box_mask[i, :len(image_boxes)] = True
        positives[i, :len(rows)] = rows
    return {"pixel_values": pixels, "pixel_mask": pixel_mask,
            "image_sizes": torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2), **text,
            "boxes": boxes, "box_mask": box_mask, "positive_map": positives,
            "image_ids": torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.int64)}
