"""Two gloo ranks, each on its shard: the gathered metrics equal one process on everything."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fiber_fast.eval import distributed, runner

from .standin import StandInFiber
from .test_runner import PAIRS, coarse_batches

KS = (1, 2, 5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mine = [PAIRS[i] for i in distributed.ShardSampler(len(PAIRS))]
        metrics = runner.evaluate_retrieval(StandInFiber(), coarse_batches(mine, 2), ks=KS, rerank_k=2)
        torch.save(metrics, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shard_sampler_covers_each_item_once():
    shards = [list(distributed.ShardSampler(7, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(7)) and [len(s) for s in shards] == [3, 2, 2]
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]  # not initialised: plain
    with pytest.raises(ValueError, match="rank"):
        distributed.ShardSampler(3, 2, 2)


@pytest.mark.slow  # two spawned processes: about 35 s on the shared 2-core machine
def test_two_ranks_gather_to_the_single_process_result(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    assert ranks[0] == ranks[1]
    # One process over the captions in gathered order (rank 0's shard, then rank 1's): ties between equal text
    # features break by that order.
    gathered_order = [PAIRS[i] for rank in range(2) for i in distributed.ShardSampler(len(PAIRS), rank, 2)]
    single = runner.evaluate_retrieval(StandInFiber(), coarse_batches(gathered_order, 2), ks=KS, rerank_k=2)
    assert ranks[0] == pytest.approx(single)
