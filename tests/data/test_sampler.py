"""ResumableDistributedSampler against torch's DistributedSampler; resume and rank sharding."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from fiber_fast.data import ResumableDistributedSampler


@pytest.mark.parametrize("num_samples,world_size,drop_last", [(10, 3, True), (10, 3, False), (7, 1, True)])
def test_same_order_as_torch_distributed_sampler(num_samples: int, world_size: int, drop_last: bool) -> None:
    for epoch in (0, 3):
        parts = []
        for rank in range(world_size):
            ours = ResumableDistributedSampler(num_samples, rank, world_size, seed=4, drop_last=drop_last)
            ours.set_epoch(epoch)
            theirs = DistributedSampler(range(num_samples), world_size, rank, shuffle=True, seed=4,
                                        drop_last=drop_last)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)
            parts.append(list(ours))
        flat = [i for part in parts for i in part]
        if drop_last:
            assert len(flat) == len(set(flat)) == num_samples // world_size * world_size
        else:
            assert set(flat) == set(range(num_samples))


def test_resume_yields_exactly_the_rest() -> None:
    full = ResumableDistributedSampler(50, rank=1, world_size=2, seed=7)
    full.set_epoch(2)
    expected = list(full)
    first = ResumableDistributedSampler(50, rank=1, world_size=2, seed=7)
    first.set_epoch(2)
    first.advance(9)
    resumed = ResumableDistributedSampler(50, rank=1, world_size=2, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert resumed.epoch == 2 and list(resumed) == expected[9:] and len(resumed) == 16
    resumed.set_epoch(2)  # the current epoch: keeps the position
    assert len(resumed) == 16
    resumed.set_epoch(3)
    assert len(resumed) == 25 and list(resumed) != expected


def test_bad_arguments_and_mismatched_state() -> None:
    with pytest.raises(ValueError, match="rank"):
        ResumableDistributedSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        ResumableDistributedSampler(1, rank=0, world_size=2)
    sampler = ResumableDistributedSampler(10)
    with pytest.raises(ValueError, match="cannot advance"):
        sampler.advance(11)
    with pytest.raises(ValueError, match="world_size=2"):
        sampler.load_state_dict(ResumableDistributedSampler(10, 0, 2).state_dict())
