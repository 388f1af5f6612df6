"""Aligned regions of two overlapping views (the local loss of moco_zca, DESIGN §4).

A view is a crop of the case: it starts at `start` (case voxel coordinates, per axis) and has size `size`; axes in
`mirror` were flipped after cropping. A case voxel c lands in the view at v = c − start, or size − 1 − (c − start)
on a mirrored axis. So the views' overlap [lo, hi) is a box in each view; cut out and flipped back on the mirrored
axes, both views' overlaps are in case orientation: index i on axis a is case voxel lo[a] + i in both. Pooling
that tensor on a regular grid (one adaptive average pool, cheap in both directions of autograd) therefore gives,
region by region, descriptors of the same physical voxels in both views.

Shapes: start, size: (D,) ints; mirror: (D,) bools; features (c, *spatial) with spatial == size.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def overlap(start1: Sequence[int], start2: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Case-coordinate box [lo, hi) shared by two crops of equal `size`; raises if they do not overlap."""
    s1, s2, sz = (np.asarray(a, dtype=np.int64) for a in (start1, start2, size))
    lo, hi = np.maximum(s1, s2), np.minimum(s1 + sz, s2 + sz)
    if np.any(hi <= lo):
        raise ValueError(f"views starting at {s1.tolist()} and {s2.tolist()} (size {sz.tolist()}) do not overlap")
    return lo, hi


def overlap_in_case_orientation(features: torch.Tensor, start: Sequence[int], mirror: Sequence[bool],
                                lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
    """The part of a view's feature map (c, *size) holding case voxels [lo, hi), un-mirrored: (c, *(hi - lo))."""
    size = features.shape[1:]
    box, flip = [], []
    for a in range(len(lo)):
        v_lo, v_hi = int(lo[a] - start[a]), int(hi[a] - start[a])
        if mirror[a]:
            v_lo, v_hi = int(size[a]) - v_hi, int(size[a]) - v_lo
            flip.append(a + 1)
        box.append(slice(v_lo, v_hi))
    crop = features[(slice(None), *box)]
    return crop.flip(flip) if flip else crop


def aligned_region_descriptors(f1: torch.Tensor, f2: torch.Tensor, start1: Sequence[int], start2: Sequence[int],
                               mirror1: Sequence[bool], mirror2: Sequence[bool], grid: int
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Average of each view's features over a grid^D split of the views' overlap: two (grid^D, c) tensors whose
    rows are the same physical regions. Raises ValueError when the overlap is smaller than the grid."""
    lo, hi = overlap(start1, start2, f1.shape[1:])
    extent = hi - lo
    if np.any(extent < grid):
        raise ValueError(f"overlap {extent.tolist()} voxels is smaller than the local-loss grid {grid} per axis; use "
                         f"a coarser grid or a larger patch (at least {grid} voxels of overlap on every axis)")
    pool = (F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(extent) - 2]
    out = []
    for f, start, mirror in ((f1, start1, mirror1), (f2, start2, mirror2)):
        crop = overlap_in_case_orientation(f, start, mirror, lo, hi)  # (c, *extent)
        out.append(pool(crop[None], grid)[0].flatten(1).T)  # (grid^D, c)
    return out[0], out[1]
