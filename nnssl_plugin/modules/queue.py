"""The MoCo queue of past keys: a FIFO ring buffer kept as persistent buffers, so `--c` restores it exactly.

Under DDP the keys of every rank are gathered before they are enqueued, so all ranks hold the same queue
(MoCo's `concat_all_gather`); without an initialised process group it is a plain single-process queue.

Shape: keys buffer (K, d), L2-normalised; ptr buffer () long, the next row to overwrite.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_from_all_ranks(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (n, ...) of every rank along dim 0 (rank order); `x` itself if not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class KeyQueue(nn.Module):
    def __init__(self, dim: int, size: int, generator: torch.Generator | None = None):
        super().__init__()
        init = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.register_buffer("keys", init)  # (K, d) random unit vectors until real keys arrive
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the (all-gathered) keys (n, d) at the pointer, wrapping around; the oldest keys are replaced."""
        keys = gather_from_all_ranks(keys.detach()).to(self.keys.dtype)  # (n * world, d)
        size = self.keys.shape[0]
        if keys.shape[0] > size:
            keys = keys[-size:]
        n = keys.shape[0]
        rows = (self.ptr + torch.arange(n, device=self.keys.device)) % size
        self.keys[rows] = keys
        self.ptr.copy_((self.ptr + n) % size)
