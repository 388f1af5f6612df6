"""Batch ZCA whitening of samples (Hassanpour et al. 2024, arXiv 2402.14611): zca(x) = (x − μ) W per channel group,
W = (Σ + εI)^-1/2 of the batch's own covariance. The training never whitens with one batch's statistics alone (it
mixes them into running ones, `nnssl_plugin.modules.whitening`); this is the reference the tests of
`nnssl_plugin.ops.whitening` check its properties on.

Shape: x (n, c) → (n, c), fp32/fp64.
"""
from __future__ import annotations

import torch

from nnssl_plugin.ops.whitening import zca_matrix


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
