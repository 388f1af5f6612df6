"""Aligned local region loss of moco_zca (Hassanpour et al. 2024, arXiv 2402.14611; docs/ARCHITECTURE.md,
"The methods").

Region descriptors d¹_r, d²_r: the first encoder stage output of each view average-pooled over the same physical
region r of the views' overlap, L2-normalised. Symmetric InfoNCE over the R regions of a case pair:

    L = ½ [ CE(d¹ d²ᵀ / τ, I) + CE(d² d¹ᵀ / τ, I) ]

the positive of region r is region r of the other view, the negatives are the other regions. (The published loss
had no gradient path to any weight and unaligned regions; here regions are aligned and the features carry
gradients.) Computed in fp32 under autocast.

Shape: d1, d2 (R, c), L2-normalised; returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def local_region_infonce(d1: torch.Tensor, d2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    with torch.autocast(device_type=d1.device.type, enabled=False):
        logits = d1.float() @ d2.float().T / temperature  # (R, R), positives on the diagonal
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
