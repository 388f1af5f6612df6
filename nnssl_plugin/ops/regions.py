"""Aligned regions of two overlapping views, of equal or different scales (the local loss of moco_zca;
docs/ARCHITECTURE.md, "The methods").

A view is a box of the case resized to the view's voxels: the box starts at `start` and spans `size` case voxels per
axis (both may be fractional; the sampler's are integers); a view of `n` voxels along an axis maps its voxel v to
the case coordinate c = start + (v + 0.5) · size / n − 0.5 (voxel centres; `F.interpolate(align_corners=False)`'s
convention), and axes in `mirror` were flipped after resizing (the resize commutes with the flip). View voxel v
thus covers the case interval [start + v·h, start + (v+1)·h), h = size / n ("edge" coordinates: case voxel c covers
[c, c + 1)). Unscaled views have size = n, h = 1: voxel v is case voxel start + v.

The views' overlap [lo, hi) in case coordinates is split into `grid` regions per axis with adaptive average
pooling's split counted in case voxels from lo: region i = [lo + ⌊iL/g⌋, min(hi, lo + ⌈(i+1)L/g⌉)),
L = hi − lo.
A region's mean in a view weights each view voxel by the length of its footprint inside the region (fractional at
the region's boundaries), so the same physical region is averaged in both views whatever their scales; for
unscaled views the weights are 1 on the region's voxels: plain averages, adaptive pooling of the overlap. Each
region is a box, so its mean is separable: one averaging matrix per axis and view, A[i, v] = |footprint(v) ∩ region
i| / |region i|, and the descriptors of a batch are one einsum — no per-region slicing, whose backward would
allocate a full feature-map gradient per region. Row r of both views' descriptors describes the same region.

The two-view sampler's box rule lives here too (`box_size`, `second_box_offsets`), so that the smallest overlap it
can produce (`min_view_overlap`) and the patch a local-loss grid needs (`min_patch_for_grid`) follow from it.

Shapes: start, size, mirror: (n, D); features (n, c, *view); descriptors (n, grid^D, c).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MAX_SHIFT = 0.5  # the two-view sampler's largest offset, a fraction of the smaller box: views overlap >= half a box


def box_size(patch: int, scale: float) -> int:
    """Case voxels spanned along one axis by a view of `patch` voxels at scale `scale`: round(patch · scale), >= 1."""
    return max(1, int(np.floor(patch * scale + 0.5)))


def second_box_offsets(size1, size2, max_shift: float = MAX_SHIFT):
    """Inclusive range (low, high) of start2 − start1 for boxes of size1 and size2 case voxels (ints or int arrays):
    the boxes' centres aligned (to a voxel, rounding down) and shifted by at most ⌊max_shift · the smaller box⌋.
    For equal boxes of a patch p: ±⌊max_shift · p⌋, the unscaled sampler's offsets."""
    size1, size2 = np.asarray(size1, dtype=np.int64), np.asarray(size2, dtype=np.int64)
    centre = (size1 - size2) // 2
    reach = np.floor(np.minimum(size1, size2) * max_shift).astype(np.int64)
    return centre - reach, centre + reach


def min_view_overlap(patch: int, scale_range: Sequence[float] | None, max_shift: float = MAX_SHIFT) -> float:
    """Smallest overlap, in view voxels of either view, that the sampler's boxes can have along an axis of `patch`
    view voxels (every pair of box sizes the scale range allows, the extreme offsets: the overlap is concave in
    the offset). Unscaled: ⌈patch / 2⌉ at max_shift 0.5."""
    lo_s, hi_s = (1.0, 1.0) if scale_range is None else scale_range
    sizes = np.arange(box_size(patch, lo_s), box_size(patch, hi_s) + 1)
    b1, b2 = np.meshgrid(sizes, sizes, indexing="ij")  # every pair of box sizes
    worst = np.inf
    for offset in second_box_offsets(b1, b2, max_shift):
        common = np.minimum(b1, offset + b2) - np.maximum(0, offset)  # case voxels of [0, b1) ∩ [offset, offset + b2)
        worst = min(worst, float((common * patch / np.maximum(b1, b2)).min()))  # in the larger box's view voxels
    return worst


def min_patch_for_grid(grid: int, scale_range: Sequence[float] | None, max_shift: float = MAX_SHIFT) -> int:
    """Smallest patch length from which on every sampled overlap spans >= `grid` view voxels in both views (so
    each region spans at least a view voxel). Unscaled: 2 · grid − 1 at max_shift 0.5."""
    lo_s = 1.0 if scale_range is None else min(scale_range)
    # beyond this the overlap (>= patch/2 − 1/(2·lo_s) view voxels) clears the grid for every longer patch
    last = 4 * grid + 8 + int(np.ceil(2.0 / lo_s))
    short = [p for p in range(1, last + 1) if min_view_overlap(p, scale_range, max_shift) < grid]
    return short[-1] + 1 if short else 1


def grid_at_stride(grid: int, patch: Sequence[int], stride: Sequence[int], scale_range: Sequence[float] | None,
                   max_shift: float = MAX_SHIFT) -> tuple[int, ...]:
    """Regions per axis for a feature map `stride` times coarser than the views (a deeper encoder stage): on each
    axis `grid`, or fewer where the smallest sampled overlap spans fewer feature voxels (at least 1), so every
    region of every pair spans at least one feature voxel. E.g. the phantom's 3d_cpu bottleneck (patch (16, 48, 48),
    stride (8, 16, 16)) under quarter-patch shifts: overlaps of >= 1.5, 2.25, 2.25 feature voxels -> (1, 2, 2)."""
    counts = []
    for p, s in zip(patch, stride):
        feature_voxels = min_view_overlap(int(p), scale_range, max_shift) / float(s)
        counts.append(max(1, min(int(grid), int(np.floor(feature_voxels + 1e-9)))))
    return tuple(counts)


def overlap(start1: Sequence[int], start2: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Case-coordinate box [lo, hi) shared by two crops of equal `size`; raises if they do not overlap."""
    s1, s2, sz = (np.asarray(a, dtype=np.int64) for a in (start1, start2, size))
    lo, hi = np.maximum(s1, s2), np.minimum(s1 + sz, s2 + sz)
    if np.any(hi <= lo):
        raise ValueError(f"views starting at {s1.tolist()} and {s2.tolist()} (size {sz.tolist()}) do not overlap")
    return lo, hi


def box_overlap(start1, size1, start2, size2) -> tuple[np.ndarray, np.ndarray]:
    """Case-coordinate interval [lo, hi) (edge coordinates, float) shared by two boxes (start, size); raises if
    they do not overlap."""
    s1, z1, s2, z2 = (np.asarray(a, dtype=np.float64) for a in (start1, size1, start2, size2))
    lo, hi = np.maximum(s1, s2), np.minimum(s1 + z1, s2 + z2)
    if np.any(hi <= lo):
        raise ValueError(f"boxes at {s1.tolist()} (size {z1.tolist()}) and {s2.tolist()} (size {z2.tolist()}) do "
                         f"not overlap; expected boxes sharing case voxels, as the two-view sampler draws them")
    return lo, hi


def region_averaging_matrix(lo: float, hi: float, start: float, size: int, mirror: bool, grid: int,
                            box: float | None = None) -> np.ndarray:
    """(grid, size) matrix averaging, for each of `grid` regions of the case interval [lo, hi), the view voxels
    that hold it along one axis of a view of `size` voxels spanning `box` case voxels from `start` (box None:
    size, an unscaled view), weighted by their footprint inside the region; `mirror`: the axis was flipped."""
    box = float(size if box is None else box)
    length = hi - lo
    if length * size / box < grid:
        raise ValueError(f"overlap of {length * size / box:g} voxels is smaller than the local-loss grid {grid}; use "
                         f"a coarser grid or a larger patch (at least {grid} voxels of overlap on every axis)")
    i = np.arange(grid)
    r_lo = lo + np.floor(i * length / grid)  # (grid,) adaptive pooling's split, in case voxels from lo
    r_hi = np.minimum(lo + np.ceil((i + 1) * length / grid), hi)
    edges = start + np.arange(size + 1) * (box / size)  # (size + 1,) case coordinates of the view voxels' edges
    covered = np.minimum(r_hi[:, None], edges[None, 1:]) - np.maximum(r_lo[:, None], edges[None, :-1])
    weight = np.clip(covered, 0.0, None)  # (grid, size) footprint of view voxel v inside region i
    matrix = weight / weight.sum(axis=1, keepdims=True)
    return matrix[:, ::-1] if mirror else matrix


def aligned_region_descriptors(f1: torch.Tensor, f2: torch.Tensor, start1, start2, mirror1, mirror2,
                               grid: int | Sequence[int], size1=None, size2=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean features of the Π grid regions of each pair's overlap, for both views: two (n, Π grid, c) tensors
    whose rows r describe the same physical region (row-major over the axes' regions). f1, f2: (n, c, *view) with
    D = 2 or 3 spatial axes; grid: regions per axis (one int for every axis, or D ints); start, mirror, size: (n, D)
    per pair (sequences or tensors); size (case voxels the view spans) None: unscaled views (size = the feature
    map's). A feature map coarser than the case (a deeper stage) is a view whose voxels span several case voxels:
    pass the case voxels the view spans as size."""
    n, _, *view = f1.shape
    dims = len(view)
    grids = [int(grid)] * dims if isinstance(grid, (int, np.integer)) else [int(g) for g in grid]
    if len(grids) != dims or min(grids) < 1:
        raise ValueError(f"grid needs one positive count per spatial axis ({dims}), found {grid}")
    geometry = []
    for start, size, mirror in ((start1, size1, mirror1), (start2, size2, mirror2)):
        start = np.asarray(start, dtype=np.float64).reshape(n, dims)  # (n, D)
        size = np.broadcast_to(np.asarray(view, dtype=np.float64) if size is None else
                               np.asarray(size, dtype=np.float64), (n, dims))  # (n, D)
        geometry.append((start, size, np.asarray(mirror, dtype=bool).reshape(n, dims)))
    (s1, z1, _), (s2, z2, _) = geometry
    mats: list[list[np.ndarray]] = [[], []]  # per view: D arrays of shape (n, grid, view_a)
    for a in range(dims):
        per_view = [np.zeros((n, grids[a], view[a])), np.zeros((n, grids[a], view[a]))]
        for j in range(n):
            lo, hi = box_overlap(s1[j, a], z1[j, a], s2[j, a], z2[j, a])
            for v, (start, size, mirror) in enumerate(geometry):
                per_view[v][j] = region_averaging_matrix(float(lo), float(hi), float(start[j, a]), view[a],
                                                         bool(mirror[j, a]), grids[a], float(size[j, a]))
        for v in range(2):
            mats[v].append(per_view[v])
    out = []
    for f, m in ((f1, mats[0]), (f2, mats[1])):
        pooled = f
        for a in reversed(range(dims)):  # last (contiguous) axis first: the first product shrinks the map most
            w = torch.as_tensor(m[a], dtype=f.dtype, device=f.device)  # (n, grid, view_a)
            pooled = torch.einsum("nc...s,ngs->nc...g", pooled.movedim(2 + a, -1), w)  # axis a -> grid, moved last
        # after D steps the grid axes are in reversed order at the end: (n, c, g_last, ..., g_first)
        pooled = pooled.permute(0, *range(pooled.dim() - 1, 1, -1), 1)  # (n, g_first, ..., g_last, c)
        out.append(pooled.reshape(n, int(np.prod(grids)), f.shape[1]))
    return out[0], out[1]
