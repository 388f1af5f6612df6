"""The plain autograd form of the voxel-wise NT-Xent of nnssl_plugin/losses/voxel.py (single process): the (2k × 2k)
logits held at once, PyTorch's cross-entropy and argmax. The reference the blockwise production loss is tested
against; not used by the plugin."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def voxel_nt_xent_logits(e1: torch.Tensor, e2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits s_ab of the 2k rows [e1; e2] (self-similarity at -inf) and each row's positive column."""
    k = e1.shape[0]
    rows = torch.cat([e1, e2]).float()
    logits = rows @ rows.T / temperature
    eye = torch.eye(2 * k, dtype=torch.bool, device=rows.device)
    logits = logits.masked_fill(eye, float("-inf"))
    local = torch.arange(k, device=rows.device)
    return logits, torch.cat([local + k, local])


def nt_xent_from_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def positive_top1(logits: torch.Tensor, target: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == target).float().mean().item()
