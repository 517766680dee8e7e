"""Input builders shared by the cross-attention tests."""

from __future__ import annotations

import torch


def make_mask(key_batches: int, seqlen_k: int, kind: str | None) -> torch.Tensor | None:
    """None, "partial" (random padding, every key batch keeps its first key) or "full" (partial, and
    the last key batch entirely padded, so its query rows have no key)."""
    if kind is None:
        return None
    generator = torch.Generator().manual_seed(1234)
    mask = torch.rand(key_batches, seqlen_k, generator=generator) < 0.4
    mask[:, 0] = False
    if kind == "full":
        mask[-1] = True
    return mask


def make_qkv(batch: int, key_batches: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(batch, heads, seqlen_q, head_dim)
    k = torch.randn(key_batches, heads, seqlen_k, head_dim)
    v = torch.randn(key_batches, heads, seqlen_k, head_dim)
    return tuple(t.to(dtype).requires_grad_() for t in (q, k, v))


def fresh(*tensors: torch.Tensor, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Detached leaf copies (optionally cast) that require grad."""
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]
