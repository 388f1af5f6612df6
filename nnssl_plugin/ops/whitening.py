"""Exact ZCA whitening and the moment algebra behind running whitening statistics.

ZCA (as used at the bottleneck by Hassanpour, Srivastav, Mutter, Padoy, ISBI 2024, arXiv 2402.14611):

    Σ = U Λ Uᵀ,  W = U (Λ + εI)^-1/2 Uᵀ,  zca(x) = (x − μ) W

W is symmetric (rotate, rescale, rotate back), so the whitened features stay as close as possible to the input
ones. Computed by an exact eigendecomposition in fp32 (fp64 for fp64 input) with autocast off, whatever the input
dtype; the published code's iterative approximation (IterNorm, 5 steps) leaves small directions unwhitened.

Gradient: W = f(Σ) with the spectral function f(λ) = (λ + ε)^-1/2, so (Daleckii–Krein)

    ∂L/∂Σ = U (K ∘ Uᵀ sym(∂L/∂W) U) Uᵀ,   K_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j) = −1 / (s_i s_j (s_i + s_j)),

with s_i = (λ_i + ε)^½. The divided difference is written without the difference quotient, so it stays finite
and exact for repeated eigenvalues (K_ii = f'(λ_i)), unlike eigh's generic backward with its 1/(λ_i − λ_j).

Moments of several sample sets combine as a mixture (the pooled mean and the covariance about it):

    μ = (1 − α) μ_a + α μ_b,   Σ = (1 − α) Σ_a + α Σ_b + α (1 − α) (μ_b − μ_a)(μ_b − μ_a)ᵀ

Shapes: samples x (n, c) or grouped (n, g, c/g); means (g, c/g); covariances (g, c/g, c/g).
"""
from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _InverseSqrtPsd(torch.autograd.Function):
    """W = U (max(Λ, 0) + ε)^-1/2 Uᵀ of symmetric matrices (..., c, c), with the divided-difference backward."""

    @staticmethod
    def forward(ctx, cov: torch.Tensor, eps: float) -> torch.Tensor:
        evals, evecs = torch.linalg.eigh(cov)  # ascending eigenvalues, orthonormal eigenvectors
        s = (evals.clamp_min(0.0) + eps).sqrt()  # (..., c)
        w = (evecs / s.unsqueeze(-2)) @ evecs.transpose(-1, -2)  # U diag(1/s) Uᵀ
        w = 0.5 * (w + w.transpose(-1, -2))  # exactly symmetric despite rounding
        ctx.save_for_backward(evecs, s)
        return w

    @staticmethod
    def backward(ctx, grad_w: torch.Tensor):
        evecs, s = ctx.saved_tensors
        g = 0.5 * (grad_w + grad_w.transpose(-1, -2))  # only symmetric perturbations of Σ exist
        k = -1.0 / (s.unsqueeze(-1) * s.unsqueeze(-2) * (s.unsqueeze(-1) + s.unsqueeze(-2)))  # (..., c, c)
        inner = evecs.transpose(-1, -2) @ g @ evecs  # Uᵀ G U
        grad_cov = evecs @ (k * inner) @ evecs.transpose(-1, -2)
        return 0.5 * (grad_cov + grad_cov.transpose(-1, -2)), None


def zca_from_covariance(cov: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ZCA matrix W = (Σ + εI)^-1/2 of covariances (..., c, c), fp32/fp64 with autocast off, differentiable with a
    gradient that is finite for repeated eigenvalues (module docstring). Negative eigenvalues (rounding) count as 0."""
    if cov.dim() < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"zca_from_covariance expects square matrices (..., c, c), found {tuple(cov.shape)}; pass "
                         f"a covariance")
    with torch.autocast(device_type=cov.device.type, enabled=False):
        return _InverseSqrtPsd.apply(cov.to(_compute_dtype(cov)), float(eps))


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (g, c) and covariance about it (g, c, c), normalised by n, of grouped samples x (n, g, c); fp32/fp64
    with autocast off, differentiable."""
    if x.dim() != 3:
        raise ValueError(f"batch_moments expects grouped samples (n, g, c), found {tuple(x.shape)}; reshape first")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(_compute_dtype(x))
        mean = x.mean(0)  # (g, c)
        xc = (x - mean).transpose(0, 1)  # (g, n, c)
        return mean, xc.transpose(1, 2) @ xc / x.shape[0]  # (g, c), (g, c, c)


def mix_moments(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor,
                alpha: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the mixture (1 − α)·a + α·b (module docstring); α a float or a 0-dim tensor."""
    delta = (mean_b - mean_a).unsqueeze(-1)  # (g, c, 1)
    mean = (1 - alpha) * mean_a + alpha * mean_b
    cov = (1 - alpha) * cov_a + alpha * cov_b + alpha * (1 - alpha) * (delta @ delta.transpose(-1, -2))
    return mean, cov


def zca_matrix(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA matrix and mean of `x` (n, c): returns (W (c, c) symmetric, mean (c,)) in fp32/fp64, differentiable."""
    if x.dim() != 2:
        raise ValueError(f"zca_matrix expects x of shape (n, c), got {tuple(x.shape)}")
    mean, cov = batch_moments(x.unsqueeze(1))  # (1, c), (1, c, c)
    return zca_from_covariance(cov[0], eps), mean[0]
