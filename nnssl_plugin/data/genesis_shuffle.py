"""Local voxel shuffling at Kats et al.'s scale (Kats, Hirsch, Heinrich, ISBI 2024, arXiv 2401.06473; after Models
Genesis: Zhou et al., MICCAI 2019 / Medical Image Analysis 2021), a batchgeneratorsv2 transform on `image`
(c, *spatial).

Kats et al. corrupt a 128×128×32 crop with 5,000 blocks whose side is the crop side // 20 per axis (6×6×1), placed
uniformly, every block read from the un-corrupted crop (shuffles do not compound) and written back in order (where
blocks overlap, the later write wins), all blocks with **one shared permutation** of their voxel positions. That is
5,000 · 36 / (128·128·32) = 34 % of the crop in block volume (~29 % of the voxels after overlaps). Here, for any
patch: block side = max(1, side // 20) per axis, and as many blocks as give the same 34 % block volume, so the
corrupted share does not depend on the patch size:

    k = max(1, side // 20) per axis,   n = ceil(0.343 · |patch| / |k|),   starts uniform in [0, side − k]
    out[idx_b] = x[idx_b[π]]   for b = 1..n in order,  idx_b the block's voxels in C order, π one permutation

Unlike `local_augment.LocalVoxelShuffle` (blocks up to side/8 covering 10–25 %, each its own permutation,
compounding), which this replaces in the `shuffle="genesis"` recipe. One permutation for all channels. Randomness: numpy's global
`np.random` only. Vectorised: one gather and one scatter of n·|k| voxels (the later write kept explicitly).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform

KATS_BLOCK_DIVISOR = 20  # block side = crop side // 20
KATS_BLOCK_VOLUME_FRACTION = 5000 * (6 * 6 * 1) / (128 * 128 * 32)  # 0.343: 5,000 blocks of 6×6×1 in 128×128×32


def genesis_block_side(spatial: tuple[int, ...]) -> np.ndarray:
    """Block side per axis: max(1, side // 20); shape (d,)."""
    return np.maximum(1, np.asarray(spatial, dtype=np.int64) // KATS_BLOCK_DIVISOR)


def genesis_num_blocks(spatial: tuple[int, ...]) -> int:
    """Blocks whose summed volume is 34.3 % of the patch (Kats et al.'s 5,000 blocks at 128×128×32)."""
    return math.ceil(KATS_BLOCK_VOLUME_FRACTION * float(np.prod(spatial)) / float(np.prod(genesis_block_side(spatial))))


class GenesisVoxelShuffle(ImageOnlyTransform):
    """Kats et al.'s local voxel shuffling; see the module docstring."""

    def get_parameters(self, **data_dict) -> dict:
        spatial = tuple(data_dict["image"].shape[1:])
        side = genesis_block_side(spatial)  # (d,)
        n = genesis_num_blocks(spatial)
        starts = np.random.randint(0, np.asarray(spatial) - side + 1, size=(n, len(spatial)))  # (n, d)
        perm = np.random.permutation(int(np.prod(side)))  # (K,) shared by every block
        return {"starts": starts, "side": side, "perm": perm}

    @staticmethod
    def flat_indices(spatial: tuple[int, ...], starts: np.ndarray, side: np.ndarray) -> np.ndarray:
        """(n, K) flat voxel indices of each block, its voxels in C order."""
        offsets = np.stack(np.meshgrid(*[np.arange(k) for k in side], indexing="ij"), axis=-1).reshape(-1, len(side))
        coords = starts[:, None, :] + offsets[None]  # (n, K, d)
        return np.ravel_multi_index(tuple(np.moveaxis(coords, -1, 0)), spatial)  # (n, K)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        spatial = tuple(img.shape[1:])
        idx = self.flat_indices(spatial, params["starts"], params["side"])  # (n, K)
        target, source = idx.reshape(-1), idx[:, params["perm"]].reshape(-1)  # block b's write, in block order
        last = len(target) - 1 - np.unique(target[::-1], return_index=True)[1]  # the later write of each voxel
        work = img if img.is_contiguous() else img.contiguous()
        flat = work.view(img.shape[0], -1)  # (c, V)
        flat[:, torch.from_numpy(target[last])] = flat[:, torch.from_numpy(source[last])]  # gathered before written
        if work is not img:
            img.copy_(work)
        return img
