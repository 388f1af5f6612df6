"""Effective rank and spectrum against matrices of known rank."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.rank import effective_rank, singular_spectrum


def _rank_r(n, d, r, seed=0, equal=True):
    """n x d embeddings whose centred matrix has rank r (equal singular values if `equal`)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, r))
    q, _ = np.linalg.qr(a - a.mean(0))  # orthonormal, centred columns
    v, _ = np.linalg.qr(rng.normal(size=(d, r)))
    s = np.ones(r) if equal else np.linspace(1.0, 3.0, r)
    return torch.tensor((q * s) @ v.T + rng.normal(size=d))  # plus a constant offset (mean), removed by centring


@pytest.mark.parametrize("r", [1, 3, 17])
def test_rank_r_matrix_with_equal_singular_values_has_effective_rank_r(r):
    assert effective_rank(_rank_r(200, 32, r)) == pytest.approx(r, rel=1e-6)


def test_unequal_singular_values_follow_the_entropy_formula():
    z = _rank_r(100, 16, 5, equal=False)
    p = np.linspace(1.0, 3.0, 5)
    p /= p.sum()
    assert effective_rank(z) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)


def test_identical_embeddings_have_rank_one():
    assert effective_rank(torch.ones(10, 4)) == 1.0


def test_spectrum_is_sorted_covariance_eigenvalues():
    z = _rank_r(300, 12, 4, equal=False, seed=1).numpy()
    expected = np.sort(np.linalg.eigvalsh(np.cov(z.T)))[::-1]
    got = singular_spectrum(torch.tensor(z)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert np.all(np.diff(got) <= 0)
