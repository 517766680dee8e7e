"""Process-group helpers: rank/world queries, gathers that keep gradients, cross-rank means.

Every helper works without an initialised process group (one process: identity / no-op), so the
objectives are plain tensor functions in tests and collectives under DeepSpeed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def is_distributed() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor (N, ...)`` of every rank along dim 0 -> ``(world * N, ...)``.

    The backward pass sends each rank the gradient of every rank's loss with respect to its own slice
    (``torch.distributed.nn.functional.all_gather``), so in-batch negatives from other ranks train
    this rank's encoders. Every rank must pass the same shape.
    """
    if world_size() == 1:
        return tensor
    return torch.cat(dist_fn.all_gather(tensor), dim=0)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor (N, ...)`` of every rank along dim 0, without gradient."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a float tensor (a copy; the input is unchanged)."""
    value = value.detach().clone().float()
    if world_size() > 1:
        dist.all_reduce(value)
        value /= world_size()
    return value


def global_slice(local_size: int) -> slice:
    """Rows of this rank's ``local_size`` items inside a :func:`gather_with_grad` result."""
    start = rank() * local_size
    return slice(start, start + local_size)
