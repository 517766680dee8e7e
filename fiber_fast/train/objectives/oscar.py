"""OSCAR's objectives besides the masked-token loss (which reuses ``mlm.mask_tokens``/``mlm.mlm_loss``).

The relation ("modality view" contrastive) loss: the data side replaces an image's tag sequence by another
image's tags with probability 0.5 and labels the pair; a classifier on the pooled ``[CLS]`` state tells the
kinds apart. Labels: 0 = matched (the image's own tags), 1 = polluted tags, 2 = Oscar+'s other kind (a
polluted caption); the binary form uses a 2-way head, Oscar+'s 3-way form a 3-way head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fiber_fast.data.oscar_dataset import MATCHED  # the labels are the data side's


def relation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``(B, C)`` relation logits against ``(B,)`` int64 labels in ``[0, C)``; fp32 0-dim.

    ``C`` = 2 (matched / polluted tags) or 3 (Oscar+: also polluted caption); label 0 = matched.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating (B, C) tensor, got {getattr(logits, 'dtype', type(logits))} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must be ({logits.shape[0]},) int64, got {getattr(labels, 'dtype', type(labels))} "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) for a {logits.shape[1]}-way relation head, got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return F.cross_entropy(logits.float(), labels)


def matched_probability(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits)[:, 0]``: the probability that words, tags and regions belong together; ``(B,)`` fp32.

    The retrieval score Oscar reports its image-text retrieval with (``logits`` ``(B, C)`` of the relation head).
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (B, C) with C >= 2, got {tuple(logits.shape)}")
    return F.softmax(logits.float(), dim=1)[:, MATCHED]
