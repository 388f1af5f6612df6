"""Multinomial logistic regression fitted to convergence: deterministic, full batch, L-BFGS (fp64, CPU).

On features standardised with the training samples' mean μ and standard deviation σ (σ = 1 for a constant feature),
z = (x − μ) / σ, it minimises the weight-decayed mean cross-entropy

    L(W, b) = −(1/v) Σ_i log softmax(W z_i + b)_{y_i} + (λ/2) ‖W‖²_F

(the bias is not decayed) with `torch.optim.LBFGS` (strong-Wolfe line search) from W = 0, b = 0. Convergence
criterion: the largest absolute component of ∇L (over W and b) is at most `tolerance`; the fit stops there, or after
`max_iterations` L-BFGS iterations, or when the objective stops changing in fp64, and reports which (`converged`
is True only for the gradient criterion). The objective is strictly convex in W for λ > 0 and softmax-invariant to
a common shift of b, which the gradient never moves (its components sum to 0 over classes), so the fit is unique
and the same inputs give the same bits. Only classes that have samples get parameters; the others are reported in
`present` and never predicted. The returned map acts on the raw features: W' = W / σ, b' = b − W' μ.

Shapes: x (v, c) features, y (v,) classes in [0, k) → weight (k, c), bias (k,), present (k,) bool.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LogisticFit:
    weight: torch.Tensor  # (k, c) fp64, on raw features; rows of absent classes are 0
    bias: torch.Tensor  # (k,) fp64
    present: torch.Tensor  # (k,) bool: classes with training samples
    iterations: int
    loss: float  # the regularised objective at the solution
    gradient_max: float  # max |∇L| at the solution
    converged: bool  # gradient_max <= tolerance

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(v, c) raw features → (v, k) logits; absent classes get −inf."""
        out = x.to(torch.float64) @ self.weight.t() + self.bias
        return out.masked_fill(~self.present, float("-inf"))


def _objective(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor, y: torch.Tensor, weight_decay: float
               ) -> torch.Tensor:
    return F.cross_entropy(z @ w.t() + b, y) + 0.5 * weight_decay * (w * w).sum()


def fit_multinomial_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-2,
                             max_iterations: int = 1000, tolerance: float = 1e-5) -> LogisticFit:
    if x.ndim != 2 or y.shape != x.shape[:1] or x.shape[0] == 0:
        raise ValueError(f"features (v, c) and classes (v,) with v > 0 are needed, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if weight_decay <= 0:
        raise ValueError(f"weight_decay must be > 0 (it makes the fit unique), got {weight_decay}")
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.long)
    present = torch.bincount(y, minlength=num_classes)[:num_classes] > 0
    index = torch.full((num_classes,), -1, dtype=torch.long)
    index[present] = torch.arange(int(present.sum()))
    y_local = index[y]  # classes renumbered over the present ones
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
    z = (x - mean) / std  # (v, c)
    w = torch.zeros(int(present.sum()), x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(int(present.sum()), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iterations, max_eval=2 * max_iterations,
                                  tolerance_grad=tolerance, tolerance_change=1e-15, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _objective(w, b, z, y_local, weight_decay)
        loss.backward()
        return loss

    optimizer.step(closure)
    iterations = int(optimizer.state[w].get("n_iter", 0)) if w in optimizer.state else 0
    loss = _objective(w, b, z, y_local, weight_decay)
    grad_w, grad_b = torch.autograd.grad(loss, (w, b))
    gradient_max = float(torch.cat([grad_w.flatten(), grad_b]).abs().max())
    with torch.no_grad():
        weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
        bias = torch.zeros(num_classes, dtype=torch.float64)
        weight[present] = w / std
        bias[present] = b - (w / std) @ mean
    return LogisticFit(weight, bias, present, iterations, float(loss.detach()), gradient_max,
                       gradient_max <= tolerance)
