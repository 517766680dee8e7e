"""Masked language modelling (MLM) on the fusion encoder: BERT masking (15 %, 80/10/10) and its loss."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@torch.no_grad()
def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, mask_token_id: int, vocab_size: int,
                special_ids: Iterable[int], probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of the real, non-special tokens.

    Each eligible token (``attention_mask == 1`` and not in ``special_ids``: never ``<s>``, ``</s>``,
    pad) is chosen with ``probability``; a chosen token becomes ``mask_token_id`` (80 %), a random
    non-special token id (10 %) or stays (10 %).

    Args:
        input_ids: ``(B, T)`` int64; attention_mask: ``(B, T)`` 0/1 int (or bool).

    Returns ``(masked_ids (B, T) int64, labels (B, T) int64)``: labels hold the original id where a
    token was chosen and ``-100`` elsewhere.
    """
    if input_ids.dim() != 2 or input_ids.dtype != torch.int64:
        raise ValueError(f"input_ids must be (B, T) int64, got {input_ids.dtype} {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must be (B, T) = {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.int64, device=input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)
    device = input_ids.device
    draw = torch.rand(input_ids.shape, generator=generator, device=device)
    chosen = eligible & (draw < probability)
    action = torch.rand(input_ids.shape, generator=generator, device=device)
    allowed = torch.arange(vocab_size, device=device)
    allowed = allowed[~torch.isin(allowed, special)]
    random_ids = allowed[torch.randint(allowed.numel(), input_ids.shape, generator=generator, device=device)]
    masked = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the chosen tokens; 0 (with gradient) when none was chosen.

    logits ``(N, V)`` (or ``(B, T, V)``) float, labels ``(N,)`` (or ``(B, T)``) int64 with -100 = ignore.
    """
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits rows {logits.shape[0]} must equal labels {labels.shape[0]}")
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
