"""Global pooling of a feature map over its spatial axes: the one definition the MoCo family's projector input,
its held-out evaluation, `nnssl_spectrum` and the readout screen (`methods/moco/readout.py`) use.

Shape: (n, c, *spatial) → (n, c), fp32.
"""
from __future__ import annotations

import torch

POOLINGS = ("avg", "max")


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool (MoCo v2's: He et al. 2020, arXiv 1911.05722), fp32."""
    return x.float().flatten(2).mean(dim=2)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """Global max pool, fp32: unlike the average of an instance-normalised map, not fixed by the map's
    normalisation."""
    return x.float().flatten(2).amax(dim=2)


def std_pool(x: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial standard deviation (population), fp32: what InstanceNorm divides by, before the norm."""
    return x.float().flatten(2).std(dim=2, unbiased=False)


def global_pool(x: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    """`avg_pool` or `max_pool` by name (one of POOLINGS)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, found '{pooling}'")
    return max_pool(x) if pooling == "max" else avg_pool(x)
