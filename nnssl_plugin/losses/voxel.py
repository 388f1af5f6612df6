"""Voxel-wise NT-Xent (SimCLR's loss, Chen et al. 2020, applied per voxel as in paper 002, Kats et al.).

Embeddings of 2k sampled voxels: e1[i] and e2[i] are the same physical voxel seen in the two views (positives);
every other voxel of both views is a negative. With z = [e1; e2] (2k, d), s_ab = z_a · z_b / τ:

    L = (1 / 2k) Σ_a −log( exp(s_{a,p(a)}) / Σ_{b ≠ a} exp(s_ab) ),   p(a) = the other view's copy of a

Symmetric in the two views by construction. Computed in fp32 under autocast.

Shape: e1, e2 (k, d), L2-normalised; returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnssl_plugin.ops.distributed import gather_with_grad, is_distributed


def voxel_nt_xent_logits(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.1, gather: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits s_ab of this process's 2k rows (self-similarity masked to -inf) and each row's positive column.

    Without `gather` (or outside DDP) the columns are the same 2k voxels. With `gather` under DDP the columns are
    every rank's voxels, [E1_all; E2_all] (2K, K = Σ_r k_r), so the negatives span the global batch: the rows are
    exactly the single-process rows of the doubled batch that belong to this rank.
    """
    if e1.shape != e2.shape or e1.dim() != 2:
        raise ValueError(f"expects two (k, d) embeddings of equal shape, got {tuple(e1.shape)} and {tuple(e2.shape)}")
    k = e1.shape[0]
    with torch.autocast(device_type=e1.device.type, enabled=False):
        rows = torch.cat([e1, e2]).float()  # (2k, d)
        if gather:
            all1, offset, _ = gather_with_grad(e1.float())  # (K, d)
            all2, _, _ = gather_with_grad(e2.float())
            columns, total = torch.cat([all1, all2]), all1.shape[0]  # (2K, d)
        else:
            columns, offset, total = rows, 0, k
        logits = rows @ columns.T / temperature  # (2k, 2K)
        local = torch.arange(k, device=rows.device) + offset  # this rank's voxels among the K
        own = torch.cat([local, local + total])  # each row's own column
        logits = logits.clone()
        logits[torch.arange(2 * k, device=rows.device), own] = float("-inf")
    target = torch.cat([local + total, local])  # positives: the other view's copy
    return logits, target


def voxel_nt_xent(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.1, gather: bool = False
                  ) -> torch.Tensor:
    logits, target = voxel_nt_xent_logits(e1, e2, temperature, gather)
    return nt_xent_from_logits(logits, target, gather)


def nt_xent_from_logits(logits: torch.Tensor, target: torch.Tensor, gathered: bool = False) -> torch.Tensor:
    """The loss L from `voxel_nt_xent_logits`. Gathered under DDP, each rank returns its rows' share of the global
    mean (sum over its rows / (2K / world)): the ranks' losses average to the single-process loss of the whole
    batch even when ranks sample different numbers of voxels, and DDP's gradient averaging gives its gradient."""
    if not (gathered and is_distributed()):
        return F.cross_entropy(logits, target)
    world = torch.distributed.get_world_size()
    return F.cross_entropy(logits, target, reduction="sum") / (logits.shape[1] / world)


def positive_top1(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows whose positive is their most similar candidate (the pretext task's accuracy)."""
    return (logits.argmax(dim=1) == target).float().mean().item()
