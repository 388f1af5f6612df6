"""MoCo's stateful pieces under DDP (gloo, 2 CPU processes) equal one process with the doubled batch: the queue
gathers keys and case ids in rank order, and the running whitening's update pools every rank's batch moments."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from nnssl_plugin.methods.moco.queue import KeyQueue
from nnssl_plugin.modules.whitening import RunningWhitening

WORLD = 2


def _data():
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(4, 6, generator=g), dim=1)  # 2 keys per rank
    case_ids = torch.tensor([3, 1, 4, 1])
    maps = [torch.randn(4, 6, 2, 3, 2, generator=g) + 2.0 for _ in range(3)]  # 3 steps, 2 images per rank each
    return keys, case_ids, maps


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        keys, case_ids, maps = _data()
        queue = KeyQueue(6, 8, generator=torch.Generator().manual_seed(2))  # same placeholders
        queue.enqueue(keys[2 * rank:2 * rank + 2], case_ids[2 * rank:2 * rank + 2])
        whitening = RunningWhitening(6, 2, 1e-3, 0.3)
        for x in maps:
            whitening.update(x[2 * rank:2 * rank + 2])
        torch.save({"queue": queue.state_dict(), "whitening": whitening.state_dict()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_queue_and_whitening_state_equal_one_process_with_the_doubled_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]
    keys, case_ids, maps = _data()
    queue = KeyQueue(6, 8, generator=torch.Generator().manual_seed(2))  # same placeholders
    queue.enqueue(keys, case_ids)
    whitening = RunningWhitening(6, 2, 1e-3, 0.3)
    for x in maps:
        whitening.update(x)
    for r in ranks:
        for name, value in queue.state_dict().items():
            assert torch.equal(r["queue"][name], value), name
        for name, value in whitening.state_dict().items():
            torch.testing.assert_close(r["whitening"][name], value, rtol=1e-5, atol=1e-6)
