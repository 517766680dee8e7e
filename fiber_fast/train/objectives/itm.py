"""Image-text matching (ITM) with hard negatives sampled from the ITC similarities (ALBEF/FIBER).

For every image one negative caption and for every caption one negative image are drawn from this
rank's batch with probability ``softmax(similarity) + 1e-5`` over the candidates that show a
different image (same-image pairs, the positive included, get weight 0; ALBEF's form). The pairs are
index vectors into the batch, so the fusion encoder runs on ``ImageLower.select`` /
``TextLower.select``-ed lower states: the unimodal lower layers run once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .validation import check_ids

WEIGHT_FLOOR = 1e-5  # ALBEF adds it after the softmax so every different-image candidate can be drawn


@dataclass(frozen=True)
class ItmPairs:
    """``M`` (image, text) pairs for the fusion encoder: ``B`` positives, then the negatives.

    image_index, text_index: ``(M,)`` int64 rows of the batch; labels: ``(M,)`` int64, 1 = match.
    """

    image_index: torch.Tensor
    text_index: torch.Tensor
    labels: torch.Tensor


def negative_weights(similarity: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """Sampling weights ``(B, B)`` fp32: ``softmax(similarity, 1) + 1e-5``, zero where the ids are equal.

    similarity ``(B, B)``: row = query, column = candidate; image_ids ``(B,)`` int64.
    """
    same = image_ids[:, None] == image_ids[None, :]
    return (F.softmax(similarity.detach().float(), dim=1) + WEIGHT_FLOOR).masked_fill(same, 0.0)


@torch.no_grad()
def sample_itm_pairs(sim_i2t: torch.Tensor, image_ids: torch.Tensor,
                     generator: torch.Generator | None = None) -> ItmPairs:
    """Positives plus one hard negative text per image and one hard negative image per text.

    Args:
        sim_i2t: ``(B, B)`` ITC logits of this rank, row = image, column = text (no gradient used).
        image_ids: ``(B,)`` int64; candidates with the query's image id are never drawn.
        generator: torch RNG (default: the global one, which the trainer checkpoints).

    Returns :class:`ItmPairs` with ``M = B + (#images with a candidate) + (#texts with a candidate)``:
    a row whose every candidate shows its own image (all captions of one image) gets no negative.
    """
    if sim_i2t.dim() != 2 or sim_i2t.shape[0] != sim_i2t.shape[1]:
        raise ValueError(f"sim_i2t must be a square (B, B) tensor, got {tuple(sim_i2t.shape)}")
    check_ids("image_ids", image_ids, sim_i2t.shape[0], sim_i2t.device)
    batch = sim_i2t.shape[0]
    rows = torch.arange(batch, device=sim_i2t.device)
    weights_i2t = negative_weights(sim_i2t, image_ids)      # image -> candidate texts
    weights_t2i = negative_weights(sim_i2t.t(), image_ids)  # text -> candidate images
    has_text, has_image = weights_i2t.sum(1) > 0, weights_t2i.sum(1) > 0
    placeholder = torch.ones_like(weights_i2t)  # rows without a candidate draw here and are dropped below
    neg_text = torch.multinomial(torch.where(has_text[:, None], weights_i2t, placeholder), 1, generator=generator)
    neg_image = torch.multinomial(torch.where(has_image[:, None], weights_t2i, placeholder), 1, generator=generator)
    neg_text, neg_image = neg_text.squeeze(1), neg_image.squeeze(1)
    image_index = torch.cat([rows, rows[has_text], neg_image[has_image]])
    text_index = torch.cat([rows, neg_text[has_text], rows[has_image]])
    labels = torch.cat([torch.ones(batch, dtype=torch.int64, device=rows.device),
                        torch.zeros(image_index.shape[0] - batch, dtype=torch.int64, device=rows.device)])
    return ItmPairs(image_index, text_index, labels)


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(M, 2)`` ITM logits (index 1 = match) against ``(M,)`` int64 labels; fp32 0-dim."""
    if logits.dim() != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (M, 2) and labels (M,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return F.cross_entropy(logits.float(), labels)
