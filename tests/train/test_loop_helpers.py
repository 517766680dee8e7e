"""The trainer's endless batch stream over a resumable loader (epoch remainders, empty data)."""

import itertools

import pytest

from fiber_fast.train.trainer import _batches


class EpochLoader:
    """Yields the rest of the current epoch, then moves to the next (as fiber_fast.data's StageLoader)."""

    def __init__(self, per_epoch, consumed=0):
        self.per_epoch, self.consumed, self.epoch = per_epoch, consumed, 0

    def __iter__(self):
        for index in range(self.consumed, self.per_epoch):
            self.consumed = index + 1
            yield (self.epoch, index)
        self.epoch, self.consumed = self.epoch + 1, 0


def test_stream_continues_across_epochs_and_after_an_empty_remainder():
    assert list(itertools.islice(_batches(EpochLoader(3)), 7)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                                                   (2, 0)]
    resumed_at_end = EpochLoader(3, consumed=3)
    assert list(itertools.islice(_batches(resumed_at_end), 2)) == [(1, 0), (1, 1)]


def test_stream_of_empty_data_raises():
    with pytest.raises(ValueError, match="no batch"):
        next(_batches(EpochLoader(0)))
