"""Exact ZCA whitening (paper 000/001, Hassanpour et al., "Overcoming Dimensional Collapse ..."; DESIGN §4).

    μ = mean(x),  Σ = (x − μ)ᵀ(x − μ) / n = U Λ Uᵀ,  W = U (Λ + εI)^-1/2 Uᵀ,  zca(x) = (x − μ) W

W is symmetric (rotate, rescale, rotate back), so the whitened features stay as close as possible to the input
ones. Computed by an exact eigendecomposition in fp32 (fp64 for fp64 input) with autocast off, whatever the
input dtype; the published code's iterative approximation (IterNorm, 5 steps) leaves small directions unwhitened.
With `groups > 1` the channels are whitened in independent groups (for few samples per channel).

Shape: x (n, c): n samples (batch × spatial positions), c channels.
"""
from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def zca_matrix(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA matrix and mean of `x` (n, c): returns (W (c, c) symmetric, mean (c,)) in fp32/fp64, differentiable."""
    if x.dim() != 2:
        raise ValueError(f"zca_matrix expects x of shape (n, c), got {tuple(x.shape)}")
    dtype = _compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(dtype)
        mean = x.mean(0)  # (c,)
        xc = x - mean  # (n, c)
        cov = xc.T @ xc / x.shape[0]  # (c, c)
        evals, evecs = torch.linalg.eigh(cov)  # ascending eigenvalues, orthonormal eigenvectors
        scale = (evals.clamp_min(0.0) + eps).rsqrt()  # (c,)
        w = (evecs * scale) @ evecs.T  # U diag(scale) Uᵀ
        w = 0.5 * (w + w.T)  # exactly symmetric despite rounding
    return w, mean


def zca_whiten(x: torch.Tensor, eps: float = 1e-5, groups: int = 1) -> torch.Tensor:
    """Whitened `x` (n, c) in fp32/fp64: channels split into `groups` equal groups, each whitened on its own."""
    n, c = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} whitening groups; choose a divisor of {c}")
    per_group = c // groups
    if n <= per_group:
        raise ValueError(f"whitening {per_group} channels per group needs more than {per_group} samples, got {n}; "
                         f"use a larger batch/patch or more groups")
    out = []
    for chunk in x.split(per_group, dim=1):  # (n, c/groups) each
        w, mean = zca_matrix(chunk, eps)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out.append((chunk.to(w.dtype) - mean) @ w)
    return torch.cat(out, dim=1)
