"""Effective rank (RankMe, Garrido et al. 2023) and the singular spectrum of embeddings (Hassanpour et al. 2024, arXiv 2402.14611, Fig. 1).

    σ = singular values of the centred embeddings Z − mean(Z),  p_k = σ_k / Σ_j σ_j,
    effective_rank(Z) = exp(−Σ_k p_k log p_k)

A matrix of rank r with r equal singular values has effective rank exactly r; collapse to few directions drives it
towards 1. Centring keeps the mean embedding (large for post-ReLU pooled features) from posing as a direction.
`singular_spectrum` gives the sorted singular values of the covariance (its eigenvalues), the curve of the plots.

Shape: z (n, d): n embeddings of dimension d. Computed in fp64 on the embeddings' device, without gradient.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def _centred(z: torch.Tensor) -> torch.Tensor:
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"expects embeddings of shape (n >= 2, d), got {tuple(z.shape)}")
    z = z.detach().to(torch.float64)
    return z - z.mean(0)


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(entropy of the normalised singular values of the centred z), between 1 and min(n - 1, d)."""
    s = torch.linalg.svdvals(_centred(z))
    if s.sum() <= eps:
        return 1.0  # all embeddings identical: complete collapse
    p = s / s.sum()
    p = p[p > eps]
    return float(math.exp(-(p * p.log()).sum().item()))


@torch.no_grad()
def singular_spectrum(z: torch.Tensor) -> torch.Tensor:
    """Singular values of the covariance of z (= its eigenvalues), sorted descending; shape (d,), fp64."""
    zc = _centred(z)
    cov = zc.T @ zc / (zc.shape[0] - 1)  # (d, d)
    return torch.linalg.svdvals(cov)
