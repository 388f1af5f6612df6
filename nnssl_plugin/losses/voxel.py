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


def voxel_nt_xent_logits(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.1
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (2k, 2k) logits s_ab (self-similarity masked to -inf) and the index p(a) of each row's positive."""
    if e1.shape != e2.shape or e1.dim() != 2:
        raise ValueError(f"expects two (k, d) embeddings of equal shape, got {tuple(e1.shape)} and {tuple(e2.shape)}")
    k = e1.shape[0]
    with torch.autocast(device_type=e1.device.type, enabled=False):
        z = torch.cat([e1, e2]).float()  # (2k, d)
        logits = z @ z.T / temperature  # (2k, 2k)
        logits = logits.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(k, 2 * k), torch.arange(0, k)]).to(z.device)  # positives
    return logits, target


def voxel_nt_xent(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    logits, target = voxel_nt_xent_logits(e1, e2, temperature)
    return F.cross_entropy(logits, target)


def positive_top1(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows whose positive is their most similar candidate (the pretext task's accuracy)."""
    return (logits.argmax(dim=1) == target).float().mean().item()
