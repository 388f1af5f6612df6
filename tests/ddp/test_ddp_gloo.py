"""DDP correctness on CPU (gloo, 2 processes): our distributed pieces equal one process with the doubled batch.

Each worker gets its half of a fixed batch; results are written to files and compared here with the single-process
computation on the whole batch: the MoCo queue's all-gathered enqueue, the voxel NT-Xent with negatives gathered
across ranks (loss and gradients, ranks holding different voxel counts), and a DDP step followed by the EMA update.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nnssl_plugin.losses.voxel import voxel_nt_xent_with_top1
from nnssl_plugin.modules.ema import ema_update, frozen_copy_of
from nnssl_plugin.methods.moco.queue import KeyQueue

WORLD = 2
VOXELS = (5, 3)  # per rank: unequal, as the sampler returns fewer voxels for small overlaps


def _data():
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(6, 4, generator=g), dim=1)  # 3 keys per rank
    e1 = F.normalize(torch.randn(sum(VOXELS), 8, generator=g, dtype=torch.float64), dim=1)
    e2 = F.normalize(torch.randn(sum(VOXELS), 8, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(8, 3, generator=g)  # 4 samples per rank
    return keys, e1, e2, x


def _model():
    torch.manual_seed(1)
    return nn.Linear(3, 2)


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        keys, e1, e2, x = _data()
        queue = KeyQueue(4, 8, generator=torch.Generator().manual_seed(2))
        queue.enqueue(keys[3 * rank:3 * rank + 3])

        lo = sum(VOXELS[:rank])
        mine1 = e1[lo:lo + VOXELS[rank]].clone().requires_grad_(True)
        mine2 = e2[lo:lo + VOXELS[rank]].clone().requires_grad_(True)
        loss = voxel_nt_xent_with_top1(mine1, mine2, 0.1, gather=True)[0]
        loss.backward()

        model = _model()
        key_model = frozen_copy_of(model, _model())
        ddp = DDP(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
        ddp(x[4 * rank:4 * rank + 4]).pow(2).mean().backward()
        optimizer.step()
        ema_update(key_model, model, 0.9)
        torch.save({"queue": queue.keys.clone(), "ptr": queue.ptr.clone(), "loss": loss.detach(),
                    "g1": mine1.grad, "g2": mine2.grad, "key_model": key_model.state_dict()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_pieces_equal_one_process_with_the_doubled_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]
    keys, e1, e2, x = _data()

    queue = KeyQueue(4, 8, generator=torch.Generator().manual_seed(2))
    queue.enqueue(keys)
    for r in ranks:
        assert torch.equal(r["queue"], queue.keys) and int(r["ptr"]) == int(queue.ptr) == 6

    a, b = e1.clone().requires_grad_(True), e2.clone().requires_grad_(True)
    loss = voxel_nt_xent_with_top1(a, b, 0.1)[0]
    loss.backward()
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, loss.detach(), rtol=1e-5, atol=0)  # fp32 sums
    for rank, r in enumerate(ranks):  # all_gather's backward sums every rank's gradient; DDP then averages
        lo = sum(VOXELS[:rank])
        torch.testing.assert_close(r["g1"] / WORLD, a.grad[lo:lo + VOXELS[rank]], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(r["g2"] / WORLD, b.grad[lo:lo + VOXELS[rank]], rtol=1e-4, atol=1e-6)

    model = _model()
    key_model = frozen_copy_of(model, _model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).pow(2).mean().backward()
    optimizer.step()
    ema_update(key_model, model, 0.9)
    for r in ranks:
        for name, value in key_model.state_dict().items():
            torch.testing.assert_close(r["key_model"][name], value, rtol=1e-6, atol=1e-7)
