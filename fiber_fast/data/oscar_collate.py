"""OSCAR batches: ``[CLS] words [SEP] tags [SEP]`` token pairs, segment ids, and padded region features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase


def encode_pairs(tokenizer: PreTrainedTokenizerBase, words: Sequence[str], tags: Sequence[str], max_text_len: int,
                 max_tag_len: int) -> dict[str, torch.Tensor]:
    """Pair-encode ``words[i]`` (the caption) with ``tags[i]`` (the tag names joined by spaces).

    The tokenizer's pair encoding gives ``[CLS] words [SEP] tags [SEP]`` (BERT WordPiece) or
    ``<s> words </s></s> tags </s>`` (RoBERTa BPE); then the word tokens after the first ``max_text_len``
    and the tag tokens after the first ``max_tag_len`` are dropped (each segment truncated on its own;
    the special tokens stay). ``token_type_ids`` come from the encoding's ``sequence_ids()`` (RoBERTa's own
    type ids are all zero): 0 up to and including the special token that closes the words, 1 from there
    on, 0 on padding.

    Returns ``input_ids``, ``token_type_ids``, ``attention_mask`` ``(B, T)`` int64, padded with
    ``tokenizer.pad_token_id`` to the longest pair (T <= ``max_text_len + max_tag_len`` + specials).
    """
    if len(words) != len(tags) or not words:
        raise ValueError(f"words and tags must be two equally long non-empty lists, got {len(words)} and {len(tags)}")
    if max_text_len < 1 or max_tag_len < 1:
        raise ValueError(f"max_text_len and max_tag_len must be >= 1, got {max_text_len} and {max_tag_len}")
    if not getattr(tokenizer, "is_fast", False) or tokenizer.pad_token_id is None:
        raise TypeError(f"OSCAR pairs need a fast tokenizer with a pad token, got {type(tokenizer).__name__}")
    encoded = tokenizer(list(words), list(tags), add_special_tokens=True, truncation=False, padding=False,
                        verbose=False)
    limits = (max_text_len, max_tag_len)
    rows: list[tuple[list[int], int]] = []
    for row, text in enumerate(words):
        ids, kept, closing = [], [0, 0], -1
        for token, sequence in zip(encoded["input_ids"][row], encoded.sequence_ids(row), strict=True):
            if sequence is None:
                if closing < 0 < kept[0]:
                    closing = len(ids)  # the special token right after the words
            elif kept[sequence] < limits[sequence]:
                kept[sequence] += 1
            else:
                continue
            ids.append(token)
        if not kept[0]:
            raise ValueError(f"caption {text!r} gives no token")
        rows.append((ids, closing))
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.int64)
    token_type_ids = torch.zeros(len(rows), length, dtype=torch.int64)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.int64)
    for row, (ids, closing) in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
        attention_mask[row, :len(ids)] = 1
        token_type_ids[row, closing + 1:len(ids)] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


def pad_regions(features: Sequence[torch.Tensor], scores: Sequence[torch.Tensor],
                max_regions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image region features ``(R_i, F)`` float32 into ``(B, R, F)`` zero-padded + ``(B, R)`` bool mask.

    ``R`` = the largest ``R_i`` capped by ``max_regions`` (at least 1, fully masked if no image has a region).
    An image with more regions keeps the ``max_regions`` of highest score (``scores[i]`` ``(R_i,)``; ties
    to the earlier region), in their stored order.
    """
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    widths = {int(f.shape[1]) for f in features}
    if len(widths) != 1 or any(f.dim() != 2 or f.dtype != torch.float32 for f in features):
        raise ValueError(f"region features must be (R_i, F) float32 with one F, got "
                         f"{[(tuple(f.shape), f.dtype) for f in features]}")
    regions = max(1, min(max_regions, max(int(f.shape[0]) for f in features)))
    out = torch.zeros(len(features), regions, widths.pop(), dtype=torch.float32)
    mask = torch.zeros(len(features), regions, dtype=torch.bool)
    for row, (image_features, image_scores) in enumerate(zip(features, scores, strict=True)):
        if image_scores.shape != image_features.shape[:1]:
            raise ValueError(f"scores must be (R_i,) = ({image_features.shape[0]},), got {tuple(image_scores.shape)}")
        if image_features.shape[0] > regions:
            order = torch.sort(image_scores, descending=True, stable=True).indices
            image_features = image_features[order[:regions].sort().values]
        out[row, :image_features.shape[0]] = image_features
        mask[row, :image_features.shape[0]] = True
    return out, mask


def collate_oscar(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_text_len: int = 35,
                  max_tag_len: int = 30, max_regions: int = 50) -> dict[str, torch.Tensor]:
    """:class:`~fiber_fast.data.oscar_dataset.OscarDataset` items -> the OSCAR batch.

    ``input_ids``, ``token_type_ids``, ``attention_mask`` ``(B, T)`` int64 (:func:`encode_pairs`: caption
    words then the tags joined by spaces), ``region_features`` ``(B, R, D + 6)`` float32 zero-padded and
    ``region_mask`` ``(B, R)`` bool True = real region (:func:`pad_regions`), ``relation_labels`` ``(B,)``
    int64 (0 matched, 1 polluted tags, 2 polluted caption), ``image_ids`` ``(B,)`` int64 (the regions' image).
    No token is masked here: the OSCAR task masks words and tags with
    ``fiber_fast.train.objectives.mask_tokens`` (specials and padding never; regions are not tokens).
    """
    if not samples:
        raise ValueError("collate_oscar needs at least one sample")
    text = encode_pairs(tokenizer, [s["caption"] for s in samples], [" ".join(s["tags"]) for s in samples],
                        max_text_len, max_tag_len)
    region_features, region_mask = pad_regions([s["region_features"] for s in samples],
                                               [s["region_scores"] for s in samples], max_regions)
    return {**text, "region_features": region_features, "region_mask": region_mask,
            "relation_labels": torch.tensor([int(s["relation_label"]) for s in samples], dtype=torch.int64),
            "image_ids": torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.int64)}
