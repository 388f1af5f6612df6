"""The one home of the DDP helpers (nothing else imports torch.distributed): whether a process group runs, its size
and this rank, gathering without gradient (`gather_from_all_ranks`: MoCo's `concat_all_gather`, for the queue and the
running whitening), sum and maximum over the ranks (`all_reduce_sum`, `all_reduce_max`), and gathering with the
gradient kept (for losses whose negatives span the global batch).

`gather_with_grad` concatenates a (k_r, d) tensor of every rank in rank order; ranks may hold different k_r (the
voxel sampler returns fewer voxels for small overlaps), so rows are padded to the largest k for the collective and
cut back after it. The backward pass sums, for each rank's rows, the gradients every rank's loss sends to them,
which is what DDP's gradient averaging then expects. Without an
initialised process group (or with one rank) it returns the input and offset 0.

Shape: x (k_r, d) → (Σ k_r, d), plus this rank's first row in it and the world size.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The initialised process group's size, else 1."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the initialised process group, else 0."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_from_all_ranks(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (n, ...) of every rank along dim 0 (rank order), no gradient; `x` itself if not distributed."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """`x` summed element-wise over the ranks (in place); `x` itself if not distributed."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """`x`'s element-wise maximum over the ranks (in place); `x` itself if not distributed."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


class _AllGatherRows(torch.autograd.Function):
    """all_gather of equal-shaped (m, d) tensors; backward: every rank's gradient for this rank's rows, summed
    (one all_reduce of the stacked gradients: supported by every backend, gloo included)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)  # (world, m, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if not is_distributed():
        return x, 0, 1
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
    sizes = [int(s.item()) for s in sizes]
    padded = F.pad(x, (0, 0, 0, max(sizes) - x.shape[0]))  # (max k, d)
    parts = _AllGatherRows.apply(padded)  # (world, max k, d)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sum(sizes[:rank]), world
