"""Voxel correspondences between two views, at every level of a U-Net's pyramid (Kats et al. 2024, arXiv 2401.06473;
docs/ARCHITECTURE.md, "The methods").

Views are crops of one case (start: case voxel of the crop's first voxel; size; mirror: axes flipped after
cropping). A case voxel c is view voxel v = c − start, or size − 1 − (c − start) on a mirrored axis.
`corresponding_voxels` samples up to `num_voxels` case voxels inside the views' overlap (foreground preferred when
a mask is given) and returns their view-voxel coordinates in both views; `to_level` maps view voxels onto a
pyramid level with cumulative per-axis stride s (anisotropic): the level cell v // s that holds the voxel, clipped
to the level's size (a stride that does not divide the patch leaves a partial last cell).

Shapes: start, size, mirror, stride: (D,); returned voxels: (k, D) int64, k ≤ num_voxels, row i of both arrays
the same case voxel.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nnssl_plugin.ops.regions import overlap


def corresponding_voxels(start1: Sequence[int], start2: Sequence[int], mirror1: Sequence[bool],
                         mirror2: Sequence[bool], size: Sequence[int], num_voxels: int = 1024,
                         foreground: np.ndarray | None = None, rng: np.random.Generator | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Sample case voxels in the overlap of two views; return their coordinates in view 1 and view 2.

    `foreground`: optional bool mask over view 1's voxels (shape `size`); if any overlap voxel is foreground, only
    those are sampled, else the whole overlap (an all-background crop still yields voxels, never an empty set).
    """
    rng = rng or np.random.default_rng()
    size = np.asarray(size, dtype=np.int64)
    lo, hi = overlap(start1, start2, size)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    case = np.stack([g.ravel() for g in grids], axis=1)  # (m, D) every overlap voxel
    v1 = _case_to_view(case, start1, size, mirror1)
    if foreground is not None:
        if tuple(foreground.shape) != tuple(size):
            raise ValueError(f"foreground mask has shape {foreground.shape}, the views {tuple(size)}")
        keep = foreground[tuple(v1.T)]
        if keep.any():
            case, v1 = case[keep], v1[keep]
    chosen = rng.choice(len(case), size=min(num_voxels, len(case)), replace=False)
    return v1[chosen], _case_to_view(case[chosen], start2, size, mirror2)


def _case_to_view(case: np.ndarray, start: Sequence[int], size: np.ndarray, mirror: Sequence[bool]) -> np.ndarray:
    view = case - np.asarray(start, dtype=np.int64)
    flip = np.asarray(mirror, dtype=bool)
    view[:, flip] = size[flip] - 1 - view[:, flip]
    return view


def to_level(voxels: np.ndarray, stride: Sequence[int], level_shape: Sequence[int]) -> np.ndarray:
    """The level cells (k, D) holding view voxels (k, D) at cumulative stride `stride`."""
    cells = voxels // np.asarray(stride, dtype=np.int64)
    return np.minimum(cells, np.asarray(level_shape, dtype=np.int64) - 1)


def gather_at_voxels(feature: torch.Tensor, batch_index: torch.Tensor, voxels: torch.Tensor,
                     stride: Sequence[int]) -> torch.Tensor:
    """Feature vectors of the level cells holding view voxels: the torch twin of `to_level` plus indexing.

    Shape: feature (n, c, *s) a pyramid level at cumulative stride `stride`; batch_index (v,) which crop each voxel
    belongs to; voxels (v, D) view-voxel coordinates → (v, c).
    """
    level_shape = torch.tensor(feature.shape[2:], device=voxels.device)
    cells = torch.minimum(voxels // torch.tensor(stride, device=voxels.device), level_shape - 1)  # (v, D)
    flat = batch_index  # (v,) row of each voxel's cell in the (n · Π s, c) matrix of the level's channel vectors
    for axis, size in enumerate(feature.shape[2:]):
        flat = flat * size + cells[:, axis]
    # index_select's backward (index_add_) is deterministic on the CPU; advanced indexing's backward adds with
    # atomics when several threads run, so two identical runs differed in the last bits of the weights
    return feature.movedim(1, -1).reshape(-1, feature.shape[1]).index_select(0, flat)  # (v, c)
