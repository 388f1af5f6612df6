"""Held-out evaluation of the hierarchical dense family (hier: Kats, Hirsch, Heinrich, ISBI 2024, arXiv 2401.06473;
voxel2vec) for the held-out hook (`nnssl_plugin.heldout`): the training forward's voxel NT-Xent
(`terms["loss_voxel"]`) and voxel top-1; V corresponding voxels per batch give 2V rows, each with 2V − 2 negatives as
in training (chance 1 / (2V − 1)); the effective rank (RankMe: Garrido et al. 2023, arXiv 2210.02885) of view 1's
pooled bottleneck.

Shapes: pooled bottlenecks (M, c); a batch as `TwoViewDataLoader` returns it.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nnssl_plugin.heldout import all_ranks_sum, evaluating, split_batch
from nnssl_plugin.ops.distributed import gather_with_grad, world_size
from nnssl_plugin.ops.pooling import avg_pool
from nnssl_plugin.ops.rank import effective_rank
from nnssl_plugin.precision import autocast

GEOMETRY_KEYS = ()  # the family's forward reads the sampled voxels, no view geometry


def evaluate_hier(network: nn.Module, batches: Iterable[dict], device: torch.device,
                  loss_batches: int | None = None, precision: str = "amp") -> dict:
    """Held-out voxel NT-Xent, top-1 and pooled-bottleneck effective rank of a dense network (hier, voxel2vec).

    The first `loss_batches` batches (all when None) go through the training forward `network(**tensors,
    **geometry)` in eval mode without gradient; loss = mean over them of `terms["loss_voxel"]`, top-1 likewise;
    negatives = mean of 2V − 2 and chance = mean of 1 / (2V − 1) for V voxels in a batch (all ranks' under DDP).
    Every batch's view 1 goes through the encoder alone for the rank (the whole pyramid, voxel sampling and NT-Xent
    of hundreds of batches would cost minutes per evaluation). Returns {"loss", "top1", "chance", "negatives",
    "crops", "erank": {"raw bottleneck": ...}}."""
    rows, pooled = [], []
    with evaluating(network):
        for i, batch in enumerate(batches):
            on_device, geometry = split_batch(batch, device, GEOMETRY_KEYS)
            with autocast(device, precision):
                bottleneck = network.encoder(on_device["view1"])[-1]  # (n, c, *s)
                out = network(**on_device, **geometry) if loss_batches is None or i < loss_batches else None
            pooled.append(avg_pool(bottleneck))
            if out is not None:
                voxels = int(on_device["voxels1"].shape[0])
                rows.append([float(out["terms"]["loss_voxel"]), float(out["top1"]) * voxels, voxels])
    table = all_ranks_sum(rows, device)  # (batches, 3)
    world = world_size()
    voxels = table[:, 2]  # V per batch, all ranks
    raw = gather_with_grad(torch.cat(pooled))[0]  # (crops, c)
    return {"loss": float((table[:, 0] / world).mean()), "top1": float((table[:, 1] / voxels).mean()),
            "chance": float((1.0 / (2 * voxels - 1)).mean()), "negatives": float((2 * voxels - 2).mean()),
            "crops": int(raw.shape[0]), "erank": {"raw bottleneck": effective_rank(raw)}}
