"""MoCo InfoNCE with a queue of negatives (He et al. 2020, MoCo; Chen et al. 2020, MoCo v2).

    L = −(1/n) Σ_i log [ exp(q_i·k_i / τ) / ( exp(q_i·k_i / τ) + Σ_j exp(q_i·m_j / τ) ) ]

q_i: query embedding, k_i: key of the other view of the same crop (positive), m_j: queued keys of earlier batches
(negatives). With K equal similarities the loss is log(K + 1). Computed in fp32 under autocast.

Shape: q (n, d) and k (n, d), L2-normalised; queue (K, d), L2-normalised; returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits with the positive in column 0: shape (n, 1 + K)."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        positive = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
        negative = q @ queue.T  # (n, K)
        return torch.cat([positive, negative], dim=1) / temperature  # (n, 1 + K)


def moco_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of queries against their keys and the queue; `k` and `queue` get no gradient (detached)."""
    logits = moco_logits(q, k.detach(), queue.detach(), temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def top1_accuracy(logits: torch.Tensor) -> float:
    """Fraction of queries whose positive (column 0) has the highest logit: the pretext task's top-1."""
    return float((logits.argmax(dim=1) == 0).float().mean().item())
