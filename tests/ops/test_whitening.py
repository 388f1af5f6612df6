"""ZCA whitening against a numpy eigendecomposition and its defining properties."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.whitening import zca_matrix, zca_whiten


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
