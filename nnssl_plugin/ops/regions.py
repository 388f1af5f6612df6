"""Aligned regions of two overlapping views (the local loss of moco_zca, DESIGN §4).

A view is a crop of the case: it starts at `start` (case voxel coordinates, per axis) and has size `size`; axes in
`mirror` were flipped after cropping. A case voxel c lands in the view at v = c − start, or size − 1 − (c − start)
on a mirrored axis. A box of case voxels therefore maps to a box of view voxels (reversed on mirrored axes), and
average-pooling a box does not depend on its order: the same physical region gives the same descriptor in both
views, whatever the flips.

Shapes: start, size: (D,) ints; mirror: (D,) bools; a box: tuple of D slices into the view's spatial axes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

Box = tuple[slice, ...]


def overlap(start1: Sequence[int], start2: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Case-coordinate box [lo, hi) shared by two crops of equal `size`; raises if they do not overlap."""
    s1, s2, sz = (np.asarray(a, dtype=np.int64) for a in (start1, start2, size))
    lo, hi = np.maximum(s1, s2), np.minimum(s1 + sz, s2 + sz)
    if np.any(hi <= lo):
        raise ValueError(f"views starting at {s1.tolist()} and {s2.tolist()} (size {sz.tolist()}) do not overlap")
    return lo, hi


def case_box_to_view(lo: np.ndarray, hi: np.ndarray, start: Sequence[int], size: Sequence[int],
                     mirror: Sequence[bool]) -> Box:
    """The view-voxel box holding case voxels [lo, hi) of a view (start, size, mirror)."""
    box = []
    for a in range(len(lo)):
        v_lo, v_hi = int(lo[a] - start[a]), int(hi[a] - start[a])
        if mirror[a]:
            v_lo, v_hi = int(size[a]) - v_hi, int(size[a]) - v_lo
        box.append(slice(v_lo, v_hi))
    return tuple(box)


def aligned_region_boxes(start1: Sequence[int], start2: Sequence[int], size: Sequence[int],
                         mirror1: Sequence[bool], mirror2: Sequence[bool], grid: Sequence[int]
                         ) -> tuple[list[Box], list[Box]]:
    """Split the views' overlap into a `grid` of regions; return each region's box in view 1 and in view 2.

    Raises ValueError when the overlap is smaller than the grid on some axis (say which and the minimum).
    """
    lo, hi = overlap(start1, start2, size)
    extent = hi - lo
    if np.any(extent < np.asarray(grid)):
        raise ValueError(f"overlap {extent.tolist()} voxels is smaller than the local-loss grid {list(grid)}; "
                         f"use a coarser grid or a larger patch (at least the grid on every axis)")
    edges = [np.linspace(lo[a], hi[a], grid[a] + 1).round().astype(np.int64) for a in range(len(grid))]
    boxes1, boxes2 = [], []
    for index in np.ndindex(*grid):
        r_lo = np.array([edges[a][i] for a, i in enumerate(index)])
        r_hi = np.array([edges[a][i + 1] for a, i in enumerate(index)])
        boxes1.append(case_box_to_view(r_lo, r_hi, start1, size, mirror1))
        boxes2.append(case_box_to_view(r_lo, r_hi, start2, size, mirror2))
    return boxes1, boxes2


def pool_boxes(features: torch.Tensor, boxes: Sequence[Box], scale: Sequence[int] | None = None) -> torch.Tensor:
    """Average of `features` (c, *spatial) over each box; with `scale` (the feature map's stride per axis) the
    view-voxel boxes are mapped onto the coarser grid (rounded outwards). Returns (len(boxes), c)."""
    out = []
    for box in boxes:
        if scale is not None:
            box = tuple(slice(b.start // s, max(b.start // s + 1, -(-b.stop // s))) for b, s in zip(box, scale))
        out.append(features[(slice(None), *box)].flatten(1).mean(dim=1))
    return torch.stack(out)
