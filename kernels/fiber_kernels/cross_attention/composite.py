"""The ``torch`` backend of ``cross_attention``: PyTorch composite ops, the same math as the reference
without per-window copies of the keys, values or mask.

The ``G = B // Bk`` query batches that share a key batch are stacked along the query axis
(``(Bk, H, G * Nq, D)``) and ``scaled_dot_product_attention`` runs once per key batch with FIBER's
additive ``-10000`` mask broadcast over heads and rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import MASK_VALUE


def cross_attention_composite(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              key_padding_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """q ``(B, H, Nq, D)``, k/v ``(Bk, H, Nk, D)``, mask bool ``(Bk, Nk)`` → ``(B, H, Nq, D)``."""
    batch, heads, seqlen_q, head_dim = q.shape
    key_batches = k.shape[0]
    groups = batch // key_batches
    stacked = (q.view(key_batches, groups, heads, seqlen_q, head_dim).transpose(1, 2)
               .reshape(key_batches, heads, groups * seqlen_q, head_dim))
    additive = None
    if key_padding_mask is not None:
        additive = (key_padding_mask.to(q.dtype) * MASK_VALUE).view(key_batches, 1, 1, k.shape[2])
    out = F.scaled_dot_product_attention(stacked, k, v, attn_mask=additive, scale=scale)
    out = out.view(key_batches, heads, groups, seqlen_q, head_dim).transpose(1, 2).reshape(q.shape)
    if key_padding_mask is not None:
        has_key = (~key_padding_mask.all(dim=-1)).to(out.dtype)
        out = out * has_key.repeat_interleave(groups).view(batch, 1, 1, 1)
    return out
