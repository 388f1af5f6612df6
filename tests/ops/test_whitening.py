"""ZCA whitening against a numpy eigendecomposition, its defining properties, its gradient (finite differences,
closed forms at repeated eigenvalues) and the moment algebra of running statistics (numpy pooled moments)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.whitening import batch_moments, mix_moments, zca_from_covariance, zca_matrix
from zca_reference import zca_whiten


def _correlated(n=500, c=6, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(c, c)) * np.linspace(0.2, 3.0, c)
    return rng.normal(size=(n, c)) @ mixing + rng.normal(size=c) * 5.0


def test_whitened_covariance_is_identity_and_w_is_symmetric():
    x = torch.tensor(_correlated(), dtype=torch.float64)
    w, mean = zca_matrix(x, eps=0.0)
    cov = torch.cov((x - mean).T, correction=0)
    assert torch.allclose(w @ cov @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-8)
    assert torch.equal(w, w.T)


def test_matches_numpy_eigendecomposition():
    x = _correlated(seed=1)
    eps = 1e-3
    xc = x - x.mean(0)
    cov = xc.T @ xc / len(x)
    lam, u = np.linalg.eigh(cov)
    expected = u @ np.diag(1.0 / np.sqrt(lam + eps)) @ u.T
    w, mean = zca_matrix(torch.tensor(x), eps=eps)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mean.numpy(), x.mean(0))


@pytest.mark.parametrize("dtype,expected", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                            (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_computes_in_fp32_or_fp64_whatever_the_input(dtype, expected):
    x = torch.tensor(_correlated(n=200, c=4), dtype=dtype)
    w, mean = zca_matrix(x)
    assert w.dtype == mean.dtype == expected
    assert zca_whiten(x).dtype == expected


def test_groups_whiten_each_group_independently():
    x = torch.tensor(_correlated(c=8, seed=2))
    out = zca_whiten(x, eps=0.0, groups=2)
    assert torch.allclose(out[:, :4], zca_whiten(x[:, :4], eps=0.0), atol=1e-10)
    assert torch.allclose(out[:, 4:], zca_whiten(x[:, 4:], eps=0.0), atol=1e-10)
    within = torch.cov(out[:, :4].T, correction=0)
    assert torch.allclose(within, torch.eye(4, dtype=torch.float64), atol=1e-8)


def test_gradients_are_finite_through_whitening():
    x = torch.tensor(_correlated(n=64, c=8, seed=3), dtype=torch.float32, requires_grad=True)
    (zca_whiten(x, groups=2) ** 3).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_too_few_samples_or_bad_groups_are_named():
    with pytest.raises(ValueError, match="needs more than 8 samples, got 8"):
        zca_whiten(torch.randn(8, 8))
    with pytest.raises(ValueError, match="cannot be split into 3"):
        zca_whiten(torch.randn(100, 8), groups=3)


def _spd(c, seed, evals=None):
    """A random symmetric positive definite matrix (fp64) with the given eigenvalues (default: spread out)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(c, c)))
    lam = np.linspace(0.5, 4.0, c) if evals is None else np.asarray(evals, dtype=float)
    return torch.tensor(q @ np.diag(lam) @ q.T)


def test_zca_from_covariance_matches_numpy_for_a_batch_of_groups():
    covs = torch.stack([_spd(5, 0), _spd(5, 1)])  # (g=2, 5, 5)
    eps = 1e-2
    w = zca_from_covariance(covs, eps)
    for g in range(2):
        lam, u = np.linalg.eigh(covs[g].numpy())
        np.testing.assert_allclose(w[g].numpy(), u @ np.diag(1.0 / np.sqrt(lam + eps)) @ u.T, rtol=1e-10, atol=1e-12)
    assert torch.equal(w, w.transpose(-1, -2))


def test_gradient_equals_eighs_own_backward_for_distinct_eigenvalues():
    cov = _spd(6, 2)
    r = torch.tensor(np.random.default_rng(3).normal(size=(6, 6)))
    a = cov.clone().requires_grad_()
    (zca_from_covariance(a, 1e-3) * r).sum().backward()
    b = cov.clone().requires_grad_()
    lam, u = torch.linalg.eigh(b)  # torch's generic eigh backward (fine for well separated eigenvalues)
    ((u * (lam + 1e-3).rsqrt()) @ u.T * r).sum().backward()
    sym = 0.5 * (b.grad + b.grad.T)
    torch.testing.assert_close(a.grad, sym, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("evals", [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
def test_gradient_matches_finite_differences_also_for_repeated_eigenvalues(evals):
    cov = _spd(4, 4, evals)
    torch.autograd.gradcheck(lambda a: zca_from_covariance(0.5 * (a + a.T), 1e-2), (cov.clone().requires_grad_(),))


def test_gradient_at_a_multiple_of_identity_is_the_closed_form_where_eigh_backward_fails():
    """Σ = cI: W = (c + ε)^-1/2 I and ∂L/∂Σ = −½ (c + ε)^-3/2 sym(∂L/∂W); eigh's generic backward gives NaN/inf."""
    c, eps = 2.0, 1e-2
    r = torch.tensor(np.random.default_rng(5).normal(size=(4, 4)))
    a = (c * torch.eye(4, dtype=torch.float64)).requires_grad_()
    (zca_from_covariance(a, eps) * r).sum().backward()
    expected = -0.5 * (c + eps) ** -1.5 * 0.5 * (r + r.T)
    torch.testing.assert_close(a.grad, expected, rtol=1e-10, atol=1e-12)
    b = (c * torch.eye(4, dtype=torch.float64)).requires_grad_()
    lam, u = torch.linalg.eigh(b)
    ((u * (lam + eps).rsqrt()) @ u.T * r).sum().backward()
    generic = b.grad
    assert not torch.isfinite(generic).all() or generic.abs().max() > 1e6, "eigh's backward divides by λi − λj"


def test_batch_moments_match_numpy_per_group():
    x = _correlated(n=300, c=6, seed=6)
    mean, cov = batch_moments(torch.tensor(x).reshape(300, 2, 3))  # 2 groups of 3 channels
    for g in range(2):
        part = x[:, 3 * g:3 * g + 3]
        np.testing.assert_allclose(mean[g].numpy(), part.mean(0), rtol=1e-12)
        np.testing.assert_allclose(cov[g].numpy(), np.cov(part.T, bias=True), rtol=1e-10, atol=1e-12)


def test_mixing_moments_gives_the_moments_of_the_pooled_samples():
    a, b = _correlated(n=120, c=4, seed=7), _correlated(n=40, c=4, seed=8) + 3.0
    mean_a, cov_a = batch_moments(torch.tensor(a).unsqueeze(1))
    mean_b, cov_b = batch_moments(torch.tensor(b).unsqueeze(1))
    mean, cov = mix_moments(mean_a, cov_a, mean_b, cov_b, 40 / 160)
    pooled = np.concatenate([a, b])
    np.testing.assert_allclose(mean[0].numpy(), pooled.mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov[0].numpy(), np.cov(pooled.T, bias=True), rtol=1e-10, atol=1e-12)
