"""Sharding evaluation over ranks and gathering the results (plain single process when not initialised)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.distributed as dist
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``all_gather_object``); ``[obj]`` when not distributed.

    Objects are pickled: move tensors to the CPU first (gloo and NCCL both then work).
    """
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(num_items)``: every item on exactly one rank.

    Unlike ``DistributedSampler`` it never pads with repeated items, so gathered metrics count each item once
    (ranks may get one item more or less than the others).
    """

    def __init__(self, num_items: int, rank: int | None = None, world_size: int | None = None) -> None:
        default_rank, default_world = rank_and_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if num_items < 0 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need num_items >= 0 and 0 <= rank < world_size, got {num_items}, "
                             f"{self.rank}, {self.world_size}")
        self.num_items = num_items

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_items, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))
