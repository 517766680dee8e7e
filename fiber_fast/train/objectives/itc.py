"""Image-text contrastive loss (ITC) with fusion off: symmetric InfoNCE over the global batch.

FIBER/ALBEF form: logits ``s * f_i . f_t`` with a learnable inverse temperature ``s``; the target of a
row is uniform over every key that shows the same image (several captions per image are all
positives, ALBEF's ``sim_targets``). Negatives are the keys of every rank and, optionally, an
:class:`EmbeddingQueue` of earlier steps' embeddings (never raw images).

Keys are stop-gradient by default, as in FIBER's ``compute_itc`` (``image_feat.t().clone().detach()``
next to its queue): the gradient reaches each side only as a query. ``key_grad=True`` is the CLIP
form (keys gathered with gradient). With gradient through the keys, a batch whose text embeddings
are all alike (a from-scratch text encoder's first token) drives the image embeddings to the same
point within a few steps (identical text queries score every image key equally only when the image
keys are equal), and both sides then sit at the saddle ``loss = ln(B)`` with zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import gather_no_grad, gather_with_grad
from .queue import EmbeddingQueue
from .validation import check_features, check_ids


def _info_nce(queries: torch.Tensor, query_ids: torch.Tensor, keys: torch.Tensor, key_ids: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean over query rows of ``-sum_k target_k log softmax(s q.k)``; keys with id < 0 are empty slots."""
    logits = logit_scale * queries @ keys.t()
    logits = logits.masked_fill((key_ids < 0)[None, :], float("-inf"))
    positive = (query_ids[:, None] == key_ids[None, :]) & (key_ids >= 0)[None, :]
    targets = positive.float() / positive.sum(dim=1, keepdim=True).clamp_min(1)
    log_prob = F.log_softmax(logits.float(), dim=1).masked_fill(~positive, 0.0)
    return -(log_prob * targets).sum(dim=1).mean()


def itc_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, logit_scale: torch.Tensor, image_ids: torch.Tensor,
             queue: EmbeddingQueue | None = None, key_grad: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE ``(i2t + t2i) / 2`` of this rank's rows against the global batch (+ queue).

    Args:
        image_feat: ``(B, E)`` float, L2-normalised image embeddings of this rank (``itc_head`` output).
        text_feat: ``(B, E)`` float, L2-normalised text embeddings, row b is the caption of image row b.
        logit_scale: ``(1,)`` or ``()`` inverse temperature (already ``exp``'d).
        image_ids: ``(B,)`` int64 image id of each row; rows with equal ids are positives of each other.
        queue: optional queue of earlier embeddings; read here, not updated (call ``queue.push`` after).
        key_grad: False (FIBER): keys are detached, features get gradient as queries only; True (CLIP):
            gradients also flow through the keys, to every rank's features through the gather.

    Returns a 0-dim fp32 loss. Under a process group every rank must pass the same ``B``.
    """
    check_features(image_feat=image_feat, text_feat=text_feat)
    check_ids("image_ids", image_ids, image_feat.shape[0], image_feat.device)
    if key_grad:
        keys_image, keys_text = gather_with_grad(image_feat), gather_with_grad(text_feat)
    else:
        keys_image, keys_text = gather_no_grad(image_feat.detach()), gather_no_grad(text_feat.detach())
    key_ids = gather_no_grad(image_ids)
    if queue is not None and queue.size > 0:
        keys_image = torch.cat([keys_image, queue.image_feat.to(keys_image.dtype)], dim=0)
        keys_text = torch.cat([keys_text, queue.text_feat.to(keys_text.dtype)], dim=0)
        key_ids = torch.cat([key_ids, queue.image_ids], dim=0)
    i2t = _info_nce(image_feat, image_ids, keys_text, key_ids, logit_scale)
    t2i = _info_nce(text_feat, image_ids, keys_image, key_ids, logit_scale)
    return (i2t + t2i) / 2
