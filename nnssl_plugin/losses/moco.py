"""MoCo InfoNCE with a queue of negatives (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, MoCo v2, arXiv
2003.04297), with masked queue slots.

    L = −(1/n) Σ_i log [ exp(q_i·k_i / τ) / ( exp(q_i·k_i / τ) + Σ_{j ∈ N_i} exp(q_i·m_j / τ) ) ]

q_i: query embedding, k_i: key of the other view of the same crop (positive), m_j: queued keys of earlier batches;
N_i: the slots usable as negatives for query i (`negative_mask`: filled slots of other cases). Masked slots get
logit −inf, so they neither enter the sum nor win top-1. With K equal unmasked similarities the loss is log(K + 1).
Computed in fp32 under autocast.

Shape: q (n, d) and k (n, d), L2-normalised; queue (K, d), L2-normalised; negative_mask (n, K) bool; logits
(n, 1 + K) with the positive in column 0; the loss is a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float,
                negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits with the positive in column 0 and masked negatives at −inf: shape (n, 1 + K)."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        positive = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
        negative = q @ queue.T  # (n, K)
        if negative_mask is not None:
            if negative_mask.shape != negative.shape:
                raise ValueError(f"negative_mask must be (n, K) = {tuple(negative.shape)}, found "
                                 f"{tuple(negative_mask.shape)}; build it with KeyQueue.negative_mask")
            negative = negative.masked_fill(~negative_mask, float("-inf"))
        return torch.cat([positive, negative], dim=1) / temperature  # (n, 1 + K)


def infonce_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with target column 0 of logits (n, 1 + K) (−inf columns contribute nothing)."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def moco_infonce_and_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2,
                            negative_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of queries against their keys and the queue, and its logits (n, 1 + K) for top-1; `k` and `queue`
    get no gradient (detached). What `MocoNetwork` calls."""
    logits = moco_logits(q, k.detach(), queue.detach(), temperature, negative_mask)
    return infonce_from_logits(logits), logits


def top1_accuracy(logits: torch.Tensor) -> float:
    """Fraction of queries whose positive (column 0) beats every valid negative strictly (a tie is no win; masked
    −inf columns never win): the pretext task's top-1."""
    negatives = logits[:, 1:]
    if negatives.shape[1] == 0:
        return 1.0
    return float((logits[:, 0] > negatives.max(dim=1).values).float().mean().item())
