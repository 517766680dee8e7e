"""The one description of a tensor a launcher allocates besides its outputs (every kernel family).

Each family states the buffers of a launch as a function of the shapes (``atss.triton_atss.work_buffers``,
``cross_attention.triton_attention.work_buffers``, ``window_attention.triton_bwd.work_buffers``): the
launcher allocates exactly those, and the memory benchmarks add them to fake-tensor figures (fake
tensors run an op's fake implementation and never see its launcher's buffers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["WorkBuffer", "total_bytes"]


@dataclass(frozen=True)
class WorkBuffer:
    """One tensor a launcher allocates: ``fill`` None for ``torch.empty``, else its fill value."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    fill: int | float | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def allocate(self, device: torch.device | str) -> torch.Tensor:
        """The buffer on ``device``, filled when ``fill`` is set."""
        buffer = torch.empty(self.shape, dtype=self.dtype, device=device)
        return buffer if self.fill is None else buffer.fill_(self.fill)


def total_bytes(buffers: Iterable[WorkBuffer]) -> int:
    """Bytes of ``buffers`` together (all alive at once)."""
    return sum(buffer.nbytes for buffer in buffers)
