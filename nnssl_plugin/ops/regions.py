"""Aligned regions of two overlapping views (the local loss of moco_zca, DESIGN §4).

A view is a crop of the case: it starts at `start` (case voxel coordinates, per axis) and has size `size`; axes in
`mirror` were flipped after cropping. A case voxel c lands in the view at v = c − start, or size − 1 − (c − start)
on a mirrored axis. The views' overlap [lo, hi) is split into `grid` regions per axis, region i covering case
voxels [lo + ⌊iL/g⌋, lo + ⌈(i+1)L/g⌉) with L = hi − lo (adaptive average pooling's split). Each region is a box, so
its mean is separable: one averaging matrix per axis, A[i, v] = 1/|region i| for the view voxels v of region i,
and the descriptors of a batch are one einsum — no per-region slicing, whose backward would allocate a full
feature-map gradient per region. Both views' matrices select the same case voxels, so row r of both views'
descriptors describes the same physical region.

Shapes: start, mirror: (n, D); features (n, c, *size); descriptors (n, grid^D, c).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def overlap(start1: Sequence[int], start2: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Case-coordinate box [lo, hi) shared by two crops of equal `size`; raises if they do not overlap."""
    s1, s2, sz = (np.asarray(a, dtype=np.int64) for a in (start1, start2, size))
    lo, hi = np.maximum(s1, s2), np.minimum(s1 + sz, s2 + sz)
    if np.any(hi <= lo):
        raise ValueError(f"views starting at {s1.tolist()} and {s2.tolist()} (size {sz.tolist()}) do not overlap")
    return lo, hi


def region_averaging_matrix(lo: int, hi: int, start: int, size: int, mirror: bool, grid: int) -> np.ndarray:
    """(grid, size) matrix averaging, for each of `grid` regions of case voxels [lo, hi), the view voxels that hold
    them along one axis of a view (start, size, mirror)."""
    length = hi - lo
    if length < grid:
        raise ValueError(f"overlap of {length} voxels is smaller than the local-loss grid {grid}; use a coarser grid "
                         f"or a larger patch (at least {grid} voxels of overlap on every axis)")
    matrix = np.zeros((grid, size))
    for i in range(grid):
        c_lo, c_hi = lo + (i * length) // grid, lo + -(-(i + 1) * length // grid)  # floor / ceil
        v_lo, v_hi = c_lo - start, c_hi - start
        if mirror:
            v_lo, v_hi = size - v_hi, size - v_lo
        matrix[i, v_lo:v_hi] = 1.0 / (c_hi - c_lo)
    return matrix


def aligned_region_descriptors(f1: torch.Tensor, f2: torch.Tensor, start1, start2, mirror1, mirror2, grid: int
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean features of the grid^D regions of each pair's overlap, for both views: two (n, grid^D, c) tensors
    whose rows r describe the same physical region. f1, f2: (n, c, *size) with D = 2 or 3 spatial axes."""
    n, _, *size = f1.shape
    dims = len(size)
    mats: list[list[np.ndarray]] = [[], []]  # per view: D arrays of shape (n, grid, size_a)
    for a in range(dims):
        per_view = [np.zeros((n, grid, size[a])), np.zeros((n, grid, size[a]))]
        for j in range(n):
            lo, hi = overlap(np.asarray(start1[j])[a:a + 1], np.asarray(start2[j])[a:a + 1], size[a:a + 1])
            for v, (start, mirror) in enumerate(((start1, mirror1), (start2, mirror2))):
                per_view[v][j] = region_averaging_matrix(int(lo[0]), int(hi[0]), int(start[j][a]), size[a],
                                                         bool(mirror[j][a]), grid)
        for v in range(2):
            mats[v].append(per_view[v])
    out = []
    for f, m in ((f1, mats[0]), (f2, mats[1])):
        pooled = f
        for a in reversed(range(dims)):  # last (contiguous) axis first: the first product shrinks the map most
            w = torch.as_tensor(m[a], dtype=f.dtype, device=f.device)  # (n, grid, size_a)
            pooled = torch.einsum("nc...s,ngs->nc...g", pooled.movedim(2 + a, -1), w)  # axis a -> grid, moved last
        # after D steps the grid axes are in reversed order at the end: (n, c, g_last, ..., g_first)
        pooled = pooled.permute(0, *range(pooled.dim() - 1, 1, -1), 1)  # (n, g_first, ..., g_last, c)
        out.append(pooled.reshape(n, grid ** dims, f.shape[1]))
    return out[0], out[1]
