"""Per-view corruptions of the `hier` method and photometric augmentations of the voxel2vec baseline, as
batchgeneratorsv2 transforms on `image` tensors (c, *spatial) with 2 or 3 spatial dims.

The three corruptions follow Models Genesis (Zhou et al., MICCAI 2019; Medical Image Analysis 2021) as used by
Kats et al., "Self-supervised Learning of Dense Hierarchical Representations for Medical Image Segmentation":
local voxel shuffling, a monotone Bézier intensity curve and in-painting of random boxes; the restoration target
is the crop before them, so the caller keeps a copy (like every batchgeneratorsv2 transform, these write in place).
Randomness comes only from numpy's global `np.random`, so globally seeded runs resume reproducibly.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.intensity.random_clip import CutOffOutliersTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.noise.sharpen import SharpeningTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform


def _side_range(fraction: tuple[float, float], side: int) -> tuple[int, int]:
    """Inclusive integer range of a box side that is `fraction` of `side` voxels: at least 1, at most `side`."""
    lo = min(side, max(1, math.ceil(fraction[0] * side)))
    hi = min(side, max(lo, math.floor(fraction[1] * side)))
    return lo, hi


def _sample_boxes(spatial: tuple[int, ...], sizes: np.ndarray) -> np.ndarray:
    """Uniform start corners for boxes of the given sizes (n, d) so that each lies inside `spatial`."""
    return np.random.randint(0, np.asarray(spatial) - sizes + 1, size=sizes.shape)  # (n, d)


def _box_slices(start: np.ndarray, size: np.ndarray) -> tuple[slice, ...]:
    """Index for all channels of one box: (:, z0:z1, y0:y1, x0:x1)."""
    return (slice(None),) + tuple(slice(int(s), int(s + k)) for s, k in zip(start, size))


class LocalVoxelShuffle(ImageOnlyTransform):
    """Local voxel shuffling (Models Genesis, Zhou et al. 2019/2021; a corruption of Kats et al.'s `hier`).

    Random boxes ("blocks") with each side drawn from `block_size_fraction` of the patch side (at least one
    voxel) are placed anywhere in the patch, and the voxel positions inside each block are permuted at random, the
    same permutation for every channel. Blocks are applied one after another, so the view is a permutation of the
    input that moves voxels only within the union of the blocks; each single block keeps its multiset of values.

    Args:
        num_blocks: number of blocks, an int or an inclusive range; None (default) draws blocks until their summed
            volume reaches a fraction of the patch drawn from `volume_fraction`, so the corrupted share does not
            depend on patch size or on 2D/3D (a fixed count touching 20% of a 3D patch covers a 2D one many times).
        block_size_fraction: range of a block side as a fraction of the patch side. Default (0, 1/8): blocks of
            1..16 voxels per side at 128, near Models Genesis' 1..side//10; the larger cap needs fewer blocks (and
            python iterations) for the same coverage.
        volume_fraction: range of the summed block volume as a fraction of the patch, used when num_blocks is None.
            Default (0.1, 0.25): a modest corruption that leaves most of the context intact (Models Genesis' 10,000
            blocks cover nearly all of its 64x64x32 patch) and costs a few hundred blocks at 128³.
    """

    def __init__(self, num_blocks: int | tuple[int, int] | None = None,
                 block_size_fraction: tuple[float, float] = (0.0, 1 / 8),
                 volume_fraction: tuple[float, float] = (0.1, 0.25)):
        super().__init__()
        self.num_blocks = num_blocks
        self.block_size_fraction = block_size_fraction
        self.volume_fraction = volume_fraction

    def _sample_sizes(self, spatial: tuple[int, ...]) -> np.ndarray:
        lo, hi = np.array([_side_range(self.block_size_fraction, s) for s in spatial]).T  # (d,), (d,)
        if self.num_blocks is not None:
            n = self.num_blocks if isinstance(self.num_blocks, int) else np.random.randint(self.num_blocks[0],
                                                                                            self.num_blocks[1] + 1)
            return np.random.randint(lo, hi + 1, size=(n, len(spatial)))
        target = np.random.uniform(*self.volume_fraction) * np.prod(spatial)
        sizes = np.empty((0, len(spatial)), dtype=np.int64)
        while sizes.prod(axis=1).sum() < target:  # draw in chunks, then keep the first blocks that reach the target
            sizes = np.concatenate([sizes, np.random.randint(lo, hi + 1, size=(64, len(spatial)))])
        n = int(np.searchsorted(np.cumsum(sizes.prod(axis=1)), target)) + 1
        return sizes[:n]  # (n, d)

    def get_parameters(self, **data_dict) -> dict:
        spatial = tuple(data_dict["image"].shape[1:])
        sizes = self._sample_sizes(spatial)  # (n, d)
        starts = _sample_boxes(spatial, sizes)  # (n, d)
        perms = [np.random.permutation(int(np.prod(k))) for k in sizes]
        return {"starts": starts, "sizes": sizes, "perms": perms}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        arr = img.numpy() if img.device.type == "cpu" else img.cpu().numpy()  # numpy view: ~2x faster per block
        for start, size, perm in zip(params["starts"], params["sizes"], params["perms"]):
            sl = _box_slices(start, size)
            block = arr[sl]  # (c, *size)
            arr[sl] = block.reshape(block.shape[0], -1)[:, perm].reshape(block.shape)
        if img.device.type != "cpu":
            img.copy_(torch.from_numpy(arr))
        return img


def bezier_curve(p1: tuple[float, float], p2: tuple[float, float], num: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Bézier from P0=(0,0) to P3=(1,1) with control points p1, p2, sampled at `num` equidistant t in [0,1].

    B(t) = 3(1-t)²t·P1 + 3(1-t)t²·P2 + t³·P3. Returns (xs, ys), each float64 of shape (num,).
    """
    t = np.linspace(0.0, 1.0, num)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3  # Bernstein weights of P1, P2, P3
    xs = b1 * p1[0] + b2 * p2[0] + b3
    ys = b1 * p1[1] + b2 * p2[1] + b3
    return xs, ys


class BezierIntensity(ImageOnlyTransform):
    """Monotone non-linear intensity transformation (Models Genesis, Zhou et al. 2019/2021; Kats et al. `hier`).

    Each channel is rescaled to [0, 1] by its min/max, mapped through a cubic Bézier curve with P0=(0,0), P3=(1,1)
    and random control points P1, P2 in [0,1]², and rescaled back, so min, max and the order of voxel values are
    kept (a constant channel is left unchanged). The curve is a monotone non-decreasing map: the derivative of each
    coordinate is the quadratic Bernstein polynomial 3x1·(1-t)² + 3(x2-x1)·2(1-t)t + 3(1-x2)·t², non-negative on
    [0,1] because all coefficients are when x2 >= x1, and otherwise (x2-x1)² <= x1(1-x2) (the difference is
    x2(1-x2) + (x1-x2)(1-x1) >= 0). Unlike Models Genesis the curve is never reversed: a decreasing map would
    invert contrast.

    The curve is sampled at `num_points` t values and tabulated on a uniform x grid, so mapping a voxel is a
    linear interpolation in that table (float64, elementwise; no per-voxel search). One curve per channel.
    """

    def __init__(self, num_points: int = 1000):
        super().__init__()
        self.num_points = num_points

    def get_parameters(self, **data_dict) -> dict:
        c = data_dict["image"].shape[0]
        return {"curves": [(tuple(np.random.uniform(0, 1, 2)), tuple(np.random.uniform(0, 1, 2))) for _ in range(c)]}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        grid = np.linspace(0.0, 1.0, self.num_points)
        for c, (p1, p2) in enumerate(params["curves"]):
            lo, hi = (float(v) for v in torch.aminmax(img[c]))
            if hi <= lo:
                continue
            xs, ys = bezier_curve(p1, p2, self.num_points)
            table = torch.from_numpy(np.interp(grid, xs, ys)).to(img.device)  # (k,) curve on a uniform x grid
            slope = table[1:] - table[:-1]  # (k-1,)
            pos = img[c].double().sub_(lo).mul_((self.num_points - 1) / (hi - lo)).clamp_(0, self.num_points - 1)
            i0 = pos.floor().clamp_(max=self.num_points - 2)  # (*spatial) cell index
            w = pos.sub_(i0)  # (*spatial) position in the cell, [0, 1]
            i0 = i0.long()
            y = table[i0].addcmul_(slope[i0], w)  # (*spatial) in [0, 1]
            img[c] = y.mul_(hi - lo).add_(lo).clamp_(lo, hi)
        return img


class BoxInpainting(ImageOnlyTransform):
    """In-painting (Models Genesis, Zhou et al. 2019/2021; a corruption of Kats et al.'s `hier`): a few random
    boxes anywhere in the patch are filled, in every channel, with uniform noise between that channel's min and max.

    batchgeneratorsv2's BlankRectangleTransform does not fit: it fills a box with one constant per box (its value
    function returns a float), draws different boxes for each channel, and takes box sides in voxels fixed at
    construction, not as fractions of the patch.

    Args:
        num_boxes: inclusive range of the number of boxes. Default (1, 5): Models Genesis paints up to 5.
        box_size_fraction: range of each box side as a fraction of the patch side. Default (1/8, 1/4): a bit smaller
            than Models Genesis' 1/6..1/3, so that 5 boxes replace at most ~8% of a 3D patch.
    """

    def __init__(self, num_boxes: tuple[int, int] = (1, 5), box_size_fraction: tuple[float, float] = (1 / 8, 1 / 4)):
        super().__init__()
        self.num_boxes = num_boxes
        self.box_size_fraction = box_size_fraction

    def get_parameters(self, **data_dict) -> dict:
        img = data_dict["image"]
        spatial = tuple(img.shape[1:])
        lo, hi = np.array([_side_range(self.box_size_fraction, s) for s in spatial]).T  # (d,), (d,)
        n = np.random.randint(self.num_boxes[0], self.num_boxes[1] + 1)
        sizes = np.random.randint(lo, hi + 1, size=(n, len(spatial)))  # (n, d)
        starts = _sample_boxes(spatial, sizes)  # (n, d)
        fills = [np.random.uniform(0, 1, (img.shape[0], *k)).astype(np.float32) for k in sizes]  # (c, *size) each
        return {"starts": starts, "sizes": sizes, "fills": fills}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        flat = img.reshape(img.shape[0], -1)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # (c,) before any box is painted
        view_shape = (-1,) + (1,) * (img.ndim - 1)
        lo, hi = lo.view(view_shape), hi.view(view_shape)  # (c, 1, ..., 1)
        for start, size, fill in zip(params["starts"], params["sizes"], params["fills"]):
            noise = torch.from_numpy(fill).to(img.device, img.dtype)  # (c, *size) in [0, 1)
            img[_box_slices(start, size)] = (lo + noise * (hi - lo)).clamp_(lo, hi)
        return img


def hier_local_transforms(is_2d: bool = False) -> BasicTransform:
    """The `hier` method's corruptions of one view (Kats et al., after Models Genesis): local voxel shuffling
    (p=0.8), a monotone Bézier intensity curve (p=0.9) and box in-painting (always). The restoration target is the
    view before these. `is_2d` is accepted for parity with `global_view_transforms`: all work on 2D and 3D alike."""
    del is_2d
    return ComposeTransforms([
        RandomTransform(LocalVoxelShuffle(), apply_probability=0.8),
        RandomTransform(BezierIntensity(), apply_probability=0.9),
        BoxInpainting(),
    ])


def voxel2vec_view_transforms(is_2d: bool = False) -> BasicTransform:
    """Global photometric augmentation of one view for the voxel2vec baseline: blur or sharpen (p=0.5 together),
    Gaussian noise (p=0.5) and a random intensity window (p=0.8) that clips each channel to its own random lower
    (0-10th) and upper (90-100th) percentile, via batchgeneratorsv2's CutOffOutliersTransform without std
    restoration. All keep every voxel in place; `is_2d` is accepted for parity with `global_view_transforms`.
    Blur runs without batchgeneratorsv2's FFT benchmark: for sigma <= 1.5 direct convolution is as fast, and the
    benchmark costs each worker ~1 s per new kernel size."""
    del is_2d
    return ComposeTransforms([
        RandomTransform(OneOfTransform([
            GaussianBlurTransform(blur_sigma=(0.5, 1.5), synchronize_channels=False, synchronize_axes=False,
                                  p_per_channel=1, benchmark=False),
            SharpeningTransform(strength=(0.1, 0.5), p_same_for_each_channel=0, p_per_channel=1,
                                p_clamp_intensities=0),
        ]), apply_probability=0.5),
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                        apply_probability=0.5),
        RandomTransform(CutOffOutliersTransform(percentile_lower=(0, 10), percentile_upper=(90, 100),
                                                p_synchronize_channels=False, p_per_channel=1, p_retain_std=0),
                        apply_probability=0.8),
    ])
