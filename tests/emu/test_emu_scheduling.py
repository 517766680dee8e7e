"""Block barriers, the seeded thread schedule, deadlock detection and launch configurations."""

import pytest
import torch
import torch.nn.functional as F

SEEDS = range(20)


def block_sums_reference(x: torch.Tensor, threads: int) -> torch.Tensor:
    """Per-block sums of x in blocks of ``threads`` elements (the last block zero-padded)."""
    pad = (-x.numel()) % threads
    return F.pad(x, (0, pad)).view(-1, threads).sum(1)


@pytest.mark.parametrize("variant", ["shared", "dynamic", "shfl"])
def test_block_sum_is_right_for_every_seed(emu_test, variant):
    x = torch.randn(1000)
    expected = block_sums_reference(x, 256)
    for seed in SEEDS if variant == "shared" else range(3):
        out = emu_test.block_sum(x, 256, variant, seed=seed)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4, msg=f"{variant} block sum, seed {seed}")


def test_missing_barrier_gives_wrong_sums_for_some_seeds(emu_test):
    # The racy kernel reads partial[tid + stride] possibly before its owner wrote it: with 256
    # threads in a random order that is wrong for practically every seed (unwritten shared memory
    # reads as NaN), while the same kernel with the barrier is right for all 20 (test above).
    x = torch.randn(1000)
    expected = block_sums_reference(x, 256)
    wrong = [seed for seed in SEEDS
             if not torch.allclose(emu_test.block_sum(x, 256, "racy", seed=seed), expected, atol=1e-4)]
    assert wrong, "the reduction without its barrier gave the right sums for all 20 seeds: the race went unseen"


def test_schedule_depends_on_the_seed_and_only_on_it(emu_test):
    # With 2 threads the race is lost only when thread 0 runs before thread 1: some seeds must get
    # it right and some wrong, and one seed must always give the same answer.
    x = torch.arange(1.0, 9.0)
    expected = block_sums_reference(x, 2)
    outcomes = {seed: torch.allclose(emu_test.block_sum(x, 2, "racy", seed=seed), expected) for seed in SEEDS}
    assert any(outcomes.values()) and not all(outcomes.values()), outcomes
    first = emu_test.block_sum(x, 2, "racy", seed=7)
    again = emu_test.block_sum(x, 2, "racy", seed=7)
    torch.testing.assert_close(first, again, rtol=0, atol=0, equal_nan=True)


def test_seed_keyword_restores_the_module_seed(emu_test):
    emu_test.set_seed(11)
    emu_test.block_sum(torch.ones(64), 64, "shared", seed=3)
    assert emu_test.seed() == 11
    with emu_test.schedule(5):
        assert emu_test.seed() == 5
    assert emu_test.seed() == 11
    emu_test.set_seed(0)


def test_divergent_barrier_is_reported_as_deadlock(emu_test):
    pattern = r"deadlock.*32 of 64 threads wait at __syncthreads \(emu_test_kernels.cuh:\d+\).*32 threads have exited"
    with pytest.raises(RuntimeError, match=pattern):
        emu_test.divergent(64, 32, False)
    assert torch.equal(emu_test.divergent(64, 64, False), torch.ones(64))


def test_divergent_shuffle_is_reported_as_deadlock(emu_test):
    pattern = r"deadlock.*__shfl_xor_sync at emu_test_kernels.cuh:\d+ in warp \d \(mask 0xffffffff, arrived 0xffff\)"
    with pytest.raises(RuntimeError, match=pattern):
        emu_test.divergent(64, 16, True)
    expected = (torch.arange(64) ^ 1).float()
    assert torch.equal(emu_test.divergent(64, 32, True), expected)


@pytest.mark.parametrize(("grid", "block"), [((2, 3, 2), (4, 2, 2)), ((3, 1, 1), (40, 1, 1)), ((1, 2, 1), (8, 8, 4))])
def test_indices_and_barrier_reductions(emu_test, grid, block):
    out = emu_test.indices(list(grid), list(block))
    threads = block[0] * block[1] * block[2]
    rows = []
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            even = sum(1 for x in range(block[0]) if x % 2 == 0) * block[1] * block[2]
                            rows.append([tx + 10 * ty + 100 * tz, bx + 10 * by + 100 * bz, threads,
                                         grid[0] * grid[1] * grid[2], even, int(block[0] > 1), 1])
    assert torch.equal(out, torch.tensor(rows, dtype=torch.int32))


@pytest.mark.parametrize(("block", "message"), [([1025, 1, 1], "exceeds"), ([512, 4, 1], "more than 1024 threads"),
                                                ([0, 1, 1], "zero dimension"), ([1, 1, 65], "exceeds")])
def test_bad_launch_configuration_is_refused(emu_test, block, message):
    with pytest.raises(RuntimeError, match=f"invalid launch configuration.*{message}"):
        emu_test.bad_launch(block)


def test_launch_counter_and_stack_knob(emu_test):
    before = emu_test.launches()
    emu_test.set_stack_kib(64)
    try:
        emu_test.block_sum(torch.ones(256), 256, "shared")
    finally:
        emu_test.set_stack_kib(128)
    assert emu_test.launches() == before + 1
    with pytest.raises(RuntimeError, match="16..8192 KiB"):
        emu_test.set_stack_kib(4)
