"""Can a global vector tell crops apart? Two numbers over M held-out view pairs, for screening a MoCo-family readout
before training on it (the instance-discrimination task of MoCo: He et al. 2020, arXiv 1911.05722).

For pairs (a_i, b_i), i = 1..M, the global vectors (c channels) of two views of crop i through the same network:

    B/W = Σ_c var_i((a_ic + b_ic) / 2)  /  Σ_c mean_i((a_ic − b_ic)² / 2)

between-crop variance of the pair means over the within-pair variance. Two views as unrelated as two different crops
give B/W = 0.5 (the pair mean of two independent draws has half their variance, the within-pair term all of it);
identical views give ∞. `var_i` is the sample variance (M − 1).

    top-1 = (1/M) Σ_i [argmax_j cos(ã_i, b̃_j) = i]

with every channel standardised over all 2M vectors (ã, b̃; a channel of zero spread is left at 0), i.e. the share
of view-1 vectors whose nearest view-2 vector (cosine) is their own partner's; chance 1 / M. With `groups` (the case
of each pair) the other crops of i's own case are left out of its candidates, as MoCo's training masks same-case
keys: a global vector is asked to tell cases apart, not two crops of one case; chance is then the mean of
1 / (1 + crops of other cases).

Shapes: a, b (M, c), M >= 2. Computed in fp64 without gradient.
"""
from __future__ import annotations

import torch


def _pairs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != 2 or a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(f"expects two (M >= 2, c) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.detach().to(torch.float64), b.detach().to(torch.float64)


@torch.no_grad()
def between_within_ratio(a: torch.Tensor, b: torch.Tensor) -> float:
    """B/W of the pairs (a_i, b_i): 0.5 = views as unrelated as different crops; larger = crops told apart."""
    a, b = _pairs(a, b)
    between = ((a + b) / 2).var(dim=0, unbiased=True).sum()
    within = ((a - b) ** 2 / 2).mean(dim=0).sum()
    if within == 0:
        return float("inf") if between > 0 else float("nan")
    return float(between / within)


@torch.no_grad()
def pair_top1(a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor | None = None) -> float:
    """Share of i whose nearest b_j (cosine, channels standardised over all 2M vectors) is b_i; chance 1 / M.
    `groups` (M,): candidates j ≠ i of i's own group are left out."""
    a, b = _pairs(a, b)
    both = torch.cat([a, b])
    sd = both.std(dim=0, unbiased=False)
    scale = torch.where(sd > 0, sd, torch.ones_like(sd))
    a, b = (a - both.mean(0)) / scale, (b - both.mean(0)) / scale
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-300)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-300)
    similarity = a @ b.T  # (M, M)
    if groups is not None:
        groups = groups.reshape(-1).to(similarity.device)
        own = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool,
                                                                 device=similarity.device)
        similarity = similarity.masked_fill(own, -torch.inf)
    nearest = similarity.argmax(dim=1)
    return float((nearest == torch.arange(a.shape[0], device=nearest.device)).double().mean())


def top1_chance(groups: torch.Tensor | None, m: int) -> float:
    """Chance level of `pair_top1`: 1 / M, or with groups the mean of 1 / (1 + crops of other groups)."""
    if groups is None:
        return 1.0 / m
    groups = groups.reshape(-1)
    others = (groups[:, None] != groups[None, :]).sum(dim=1).double()
    return float((1.0 / (1.0 + others)).mean())
