"""A FIFO queue of ITC embeddings (not images): extra negatives for the contrastive loss.

The official FIBER code queues 4096 raw 384x384 images (about 6.75 GiB fp32 per GPU) and re-encodes
them; this queue holds their ``E``-dim embeddings and image ids (a 4096 x 256 fp32 queue is 8 MiB).
The buffers are persistent, so DeepSpeed checkpoints carry the queue and resume is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import gather_no_grad


class EmbeddingQueue(nn.Module):
    """``size`` slots of image/text embeddings ``(size, dim)`` fp32 and image ids ``(size,)`` (-1 = empty).

    Every rank pushes the *gathered* batch, so all ranks hold the same queue.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 0 or dim <= 0:
            raise ValueError(f"queue size must be >= 0 and dim > 0, got size={size}, dim={dim}")
        self.size = size
        self.register_buffer("image_feat", torch.zeros(size, dim))
        self.register_buffer("text_feat", torch.zeros(size, dim))
        self.register_buffer("image_ids", torch.full((size,), -1, dtype=torch.int64))
        self.register_buffer("pointer", torch.zeros(1, dtype=torch.int64))

    @torch.no_grad()
    def push(self, image_feat: torch.Tensor, text_feat: torch.Tensor, image_ids: torch.Tensor) -> None:
        """Enqueue this step's global batch (``(B, E)``, ``(B, E)``, ``(B,)`` per rank; gathered here)."""
        if self.size == 0:
            return
        image_feat, text_feat = gather_no_grad(image_feat.detach()), gather_no_grad(text_feat.detach())
        image_ids = gather_no_grad(image_ids)
        count = min(image_ids.shape[0], self.size)
        slots = (int(self.pointer) + torch.arange(count, device=self.pointer.device)) % self.size
        self.image_feat[slots] = image_feat[-count:].float()
        self.text_feat[slots] = text_feat[-count:].float()
        self.image_ids[slots] = image_ids[-count:]
        self.pointer.fill_((int(self.pointer) + count) % self.size)
