"""A resumable distributed sampler for map-style datasets.

Epoch ``e`` shuffles ``range(num_samples)`` with ``seed + e``, drops (or, without ``drop_last``, repeats)
samples to a multiple of ``world_size``, and gives rank ``r`` every ``world_size``-th index from ``r``,
as ``torch.utils.data.DistributedSampler`` does. ``consumed`` counts the samples of this rank already
trained on in the current epoch; an iterator started after ``load_state_dict`` yields exactly the
indices an uninterrupted run would still have yielded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class ResumableDistributedSampler(Sampler[int]):
    """Shards ``range(num_samples)`` over ranks; ``state_dict()`` = ``{"epoch", "consumed", ...}``.

    The consumer (the loader) calls :meth:`advance` with the samples it has handed to the trainer;
    :meth:`set_epoch` with a new epoch resets ``consumed`` to 0 (with the current epoch it keeps it).
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if drop_last and num_samples < world_size:
            raise ValueError(f"num_samples ({num_samples}) < world_size ({world_size}) leaves ranks empty")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        self.consumed = 0

    @property
    def per_rank(self) -> int:
        """Samples of one rank in one epoch."""
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    def rank_indices(self) -> list[int]:
        """This rank's indices of the current epoch, in order."""
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        total = self.per_rank * self.world_size
        if total > self.num_samples:
            order = torch.cat([order, order[:total - self.num_samples]])
        return order[:total][self.rank::self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices()[self.consumed:])

    def __len__(self) -> int:
        return self.per_rank - self.consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def advance(self, samples: int) -> None:
        """Record ``samples`` more samples of this epoch as consumed."""
        if samples < 0 or self.consumed + samples > self.per_rank:
            raise ValueError(f"cannot advance by {samples}: {self.consumed} of {self.per_rank} consumed")
        self.consumed += samples

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "num_samples": self.num_samples,
                "world_size": self.world_size, "rank": self.rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore epoch and position; the dataset size, world size and seed must match the saved ones."""
        for key in ("num_samples", "world_size", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}: "
                                 "resume with the same data, world size and seed")
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
