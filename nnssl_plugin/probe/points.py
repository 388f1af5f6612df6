"""A feature map upsampled to a window's size, read only at given voxels.

`F.interpolate(f, size=out, mode="(tri|bi)linear", align_corners=False)` at output voxel i of an axis reads the
input at the source coordinate s = (i + ½)·S/D − ½ (clamped to [0, S − 1]) of an input axis of S cells and an output
axis of D voxels. `grid_sample` with `align_corners=False` and border padding reads the same point when given the
normalised coordinate u = (2i + 1)/D − 1, since it maps u to ((u + 1)·S − 1)/2 = s. So the voxels' rows of the full
upsampled map come without building it (the linear probe of `LinearProbeNetwork` upsamples its per-level logits the
same way; interpolation is linear, so logits of the upsampled features equal upsampled logits).

Shape: feature (1, c, *s) with 2 or 3 spatial axes, voxels (v, dims) integer indices into `out_size` → (v, c).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def upsampled_at(feature: torch.Tensor, voxels: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
    dims = len(out_size)
    if feature.ndim != dims + 2 or voxels.shape[-1] != dims:
        raise ValueError(f"a feature map (1, c, {dims} axes) and voxels (v, {dims}) are needed, got "
                         f"{tuple(feature.shape)} and {tuple(voxels.shape)}")
    if tuple(feature.shape[2:]) == tuple(out_size):  # full resolution: the map itself, read exactly
        return feature[0][(slice(None), *voxels.long().t())].t()
    size = torch.tensor(list(out_size), dtype=torch.float64, device=voxels.device)
    u = (2 * voxels.to(torch.float64) + 1) / size - 1  # (v, dims), axis order of the tensor
    grid = u.flip(-1).to(feature.dtype).reshape(1, *([1] * (dims - 1)), -1, dims)  # grid_sample wants (x, y[, z])
    out = F.grid_sample(feature, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(feature.shape[1], -1).t()  # (v, c)
