"""The multinomial logistic regression: optimality checked in numpy, agreement with scipy's L-BFGS-B on the same
objective, separable data, absent classes, convergence reporting, bit-identical refits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from nnssl_plugin.probe.logistic import fit_multinomial_logistic

K = 3


def _data(n: int = 300, c: int = 5, seed: int = 0, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    centres = rng.normal(0, shift, (K, c))
    x = centres[y] + rng.normal(0, 1, (n, c)) * np.array([1, 10, 0.1, 3, 1])[:c] + np.array([0, 50, -3, 0, 7])[:c]
    return torch.from_numpy(x), torch.from_numpy(y)


def _numpy_objective(params: np.ndarray, z: np.ndarray, y: np.ndarray, lam: float):
    """The docstring's objective and gradient on standardised features, written out in numpy."""
    c = z.shape[1]
    w, b = params[:K * c].reshape(K, c), params[K * c:]
    logits = z @ w.T + b
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    onehot = np.eye(K)[y]
    loss = -np.mean(np.log(p[np.arange(len(y)), y])) + 0.5 * lam * (w ** 2).sum()
    grad_w = (p - onehot).T @ z / len(y) + lam * w
    grad_b = (p - onehot).mean(0)
    return loss, np.concatenate([grad_w.ravel(), grad_b])


def _standardise(x: np.ndarray):
    mean, std = x.mean(0), x.std(0)
    return (x - mean) / std, mean, std


def test_the_solution_is_stationary_for_a_numpy_gradient_and_matches_scipy():
    x, y = _data()
    fit = fit_multinomial_logistic(x, y, K, weight_decay=1e-2, tolerance=1e-8)
    z, mean, std = _standardise(x.numpy())
    w_std = fit.weight.numpy() * std  # back to the standardised parametrisation
    b_std = fit.bias.numpy() + fit.weight.numpy() @ mean
    loss, grad = _numpy_objective(np.concatenate([w_std.ravel(), b_std]), z, y.numpy(), 1e-2)
    assert fit.converged and np.abs(grad).max() < 1e-5
    assert loss == pytest.approx(fit.loss, rel=1e-9)
    reference = minimize(_numpy_objective, np.zeros(K * z.shape[1] + K), args=(z, y.numpy(), 1e-2), jac=True,
                         method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 10000})
    w_ref = reference.x[:K * z.shape[1]].reshape(K, -1)
    np.testing.assert_allclose(w_std, w_ref, atol=1e-4)
    np.testing.assert_allclose(fit.logits(x).numpy(), z @ w_ref.T + reference.x[K * z.shape[1]:], atol=1e-4)


def test_separable_classes_are_all_predicted_right():
    x, y = _data(shift=20.0)
    fit = fit_multinomial_logistic(x, y, K, weight_decay=1e-4)
    assert torch.equal(fit.logits(x).argmax(1), y)


def test_a_class_without_samples_has_no_parameters_and_is_never_predicted():
    x, y = _data()
    y = torch.where(y == 1, torch.tensor(2), y)
    fit = fit_multinomial_logistic(x, y, K)
    assert fit.present.tolist() == [True, False, True]
    assert fit.weight[1].abs().sum() == 0 and (fit.logits(x).argmax(1) != 1).all()


def test_a_fit_stopped_early_says_it_did_not_converge():
    x, y = _data()
    fit = fit_multinomial_logistic(x, y, K, weight_decay=1e-4, max_iterations=2)
    assert not fit.converged and fit.gradient_max > 1e-6 and fit.iterations <= 2


def test_constant_features_only_fit_the_class_frequencies():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    fit = fit_multinomial_logistic(torch.ones(6, 3) * 4.0, y, K, tolerance=1e-9)
    p = torch.softmax(fit.logits(torch.ones(1, 3) * 4.0), 1)[0]
    torch.testing.assert_close(p, torch.tensor([2 / 6, 1 / 6, 3 / 6], dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_same_inputs_give_the_same_bits():
    x, y = _data()
    a = fit_multinomial_logistic(x, y, K)
    b = fit_multinomial_logistic(x.clone(), y.clone(), K)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and a.loss == b.loss
