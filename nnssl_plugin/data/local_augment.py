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
from typing import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform

from nnssl_plugin.data.genesis_shuffle import GenesisVoxelShuffle
from nnssl_plugin.data.vox2vec_augment import (GaussianNoiseSd, GaussianSharpen, InPlaneGaussianBlur,
                                               RandomIntensityWindow)

# Box sides as fractions of the patch side such that 1-5 boxes paint ~5 % of a patch on average (Kats et al.):
# expected painted fraction (union of the boxes) 4.8-5.0 % in 3D, 5.3-5.4 % in 2D for patches of 32-256 voxels
# per side, computed exactly from the per-axis coverage probabilities (tests/data/test_local_augment.py).
INPAINT_BOX_FRACTION_3D = (1 / 6, 0.35)  # Models Genesis' 1/6..1/3, upper end raised to reach 5 %
INPAINT_BOX_FRACTION_2D = (0.09, 0.18)  # same mean box area relative to the patch as the 3D boxes' volume


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

    With a `window` (one (lo, hi) pair per channel, in the image's units, e.g. a soft-tissue window from
    `nnssl_plugin.intensity.soft_tissue_windows`), the curve is rescaled to [lo, hi] instead of the crop's
    [min, max]: voxels v with lo <= v <= hi become lo + (hi - lo)·B((v - lo) / (hi - lo)), all others are left
    bit-identical. Since B(0) = 0 and B(1) = 1 the map stays continuous and monotone non-decreasing over the whole
    real line, and the curve's strength goes to the tissues inside the window rather than to air and bone.

    `min_deviation` > 0 redraws a channel's control points until the tabulated curve departs from the identity by
    at least that much somewhere (max |B(x) − x| on [0, 1]), so that no view gets a near-identity curve; 0 (the
    default, as in Models Genesis) keeps every draw. About 4 % of uniform draws fall below 0.05, 17 % below 0.1.

    The curve is sampled at `num_points` t values and tabulated on a uniform x grid, so mapping a voxel is a
    linear interpolation in that table (float64, elementwise; no per-voxel search). One curve per channel.
    """

    MAX_MIN_DEVIATION = 0.3  # about a quarter of uniform draws still reach it, so redrawing ends quickly

    def __init__(self, num_points: int = 1000, window: list[tuple[float, float]] | tuple[tuple[float, float], ...]
                 | None = None, min_deviation: float = 0.0):
        super().__init__()
        self.num_points = num_points
        if not 0.0 <= min_deviation <= self.MAX_MIN_DEVIATION:
            raise ValueError(f"BezierIntensity min_deviation must lie in [0, {self.MAX_MIN_DEVIATION}], found "
                             f"{min_deviation}; larger values would reject most random curves")
        self.min_deviation = float(min_deviation)
        if window is not None:
            window = [(float(lo), float(hi)) for lo, hi in window]
            bad = [(c, w) for c, w in enumerate(window) if not w[1] > w[0]]
            if bad:
                raise ValueError(f"BezierIntensity window needs lo < hi per channel, found {bad} (channel, (lo, hi)); "
                                 f"pass finite pairs with lo < hi, e.g. from soft_tissue_windows(plans, configuration)")
        self.window = window

    def get_parameters(self, **data_dict) -> dict:
        c = data_dict["image"].shape[0]
        if self.window is not None and len(self.window) != c:
            raise ValueError(f"BezierIntensity window has {len(self.window)} (lo, hi) pair(s) but the image has {c} "
                             f"channel(s); pass one pair per input channel, in the plans' channel order")
        return {"curves": [self._draw_curve() for _ in range(c)]}

    def _draw_curve(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Control points (P1, P2), uniform in [0,1]², redrawn while the curve stays within min_deviation of y = x."""
        grid = np.linspace(0.0, 1.0, self.num_points)
        while True:
            p1, p2 = tuple(np.random.uniform(0, 1, 2)), tuple(np.random.uniform(0, 1, 2))
            if self.min_deviation <= 0.0:
                return p1, p2
            xs, ys = bezier_curve(p1, p2, self.num_points)
            if np.abs(np.interp(grid, xs, ys) - grid).max() >= self.min_deviation:
                return p1, p2

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        grid = np.linspace(0.0, 1.0, self.num_points)
        for c, (p1, p2) in enumerate(params["curves"]):
            if self.window is None:
                lo, hi = (float(v) for v in torch.aminmax(img[c]))
            else:
                lo, hi = self.window[c]
            if hi <= lo:
                continue
            xs, ys = bezier_curve(p1, p2, self.num_points)
            table = torch.from_numpy(np.interp(grid, xs, ys)).to(img.device)  # (k,) curve on a uniform x grid
            slope = table[1:] - table[:-1]  # (k-1,)
            pos = img[c].to(torch.float64, copy=True)  # (*spatial); a copy even for float64 input, which is read below
            pos.sub_(lo).mul_((self.num_points - 1) / (hi - lo)).clamp_(0, self.num_points - 1)
            i0 = pos.floor().clamp_(max=self.num_points - 2)  # (*spatial) cell index
            w = pos.sub_(i0)  # (*spatial) position in the cell, [0, 1]
            i0 = i0.long()
            y = table[i0].addcmul_(slope[i0], w).mul_(hi - lo).add_(lo).clamp_(lo, hi)  # (*spatial) in [lo, hi]
            if self.window is None:
                img[c] = y
            else:
                inside = (img[c] >= lo) & (img[c] <= hi)  # (*spatial); voxels outside keep their exact value
                img[c] = torch.where(inside, y.to(img.dtype), img[c])
        return img


class BoxInpainting(ImageOnlyTransform):
    """In-painting (Models Genesis, Zhou et al. 2019/2021; a corruption of Kats et al.'s `hier`): a few random
    boxes anywhere in the patch are filled, in every channel, with uniform noise between that channel's min and max,
    or over a given per-channel `value_range` (Kats et al. paint noise in [0, 1] of CT clipped to [−175, 250] HU,
    i.e. over a soft-tissue window).

    batchgeneratorsv2's BlankRectangleTransform does not fit: it fills a box with one constant per box (its value
    function returns a float), draws different boxes for each channel, and takes box sides in voxels fixed at
    construction, not as fractions of the patch.

    Args:
        num_boxes: inclusive range of the number of boxes. Default (1, 5): Models Genesis paints up to 5.
        box_size_fraction: range of each box side as a fraction of the patch side. Default None: by the patch's
            dimensionality, INPAINT_BOX_FRACTION_3D or _2D, which paint ~5 % of a patch on average (Kats et al.).
        value_range: per channel (lo, hi) of the noise. Default None: the channel's min and max in the crop.
    """

    def __init__(self, num_boxes: tuple[int, int] = (1, 5), box_size_fraction: tuple[float, float] | None = None,
                 value_range: Sequence[tuple[float, float]] | None = None):
        super().__init__()
        self.num_boxes = num_boxes
        self.box_size_fraction = box_size_fraction
        if value_range is not None and any(not float(h) > float(l) for l, h in value_range):
            raise ValueError(f"BoxInpainting value_range needs lo < hi per channel, found {value_range}; pass e.g. "
                             f"soft_tissue_windows(plans, configuration)")
        self.value_range = None if value_range is None else [(float(l), float(h)) for l, h in value_range]

    def get_parameters(self, **data_dict) -> dict:
        img = data_dict["image"]
        spatial = tuple(img.shape[1:])
        if self.value_range is not None and len(self.value_range) != img.shape[0]:
            raise ValueError(f"BoxInpainting value_range has {len(self.value_range)} pair(s) but the image has "
                             f"{img.shape[0]} channel(s); pass one (lo, hi) per input channel")
        fraction = self.box_size_fraction or (INPAINT_BOX_FRACTION_2D if len(spatial) == 2 else INPAINT_BOX_FRACTION_3D)
        lo, hi = np.array([_side_range(fraction, s) for s in spatial]).T  # (d,), (d,)
        n = np.random.randint(self.num_boxes[0], self.num_boxes[1] + 1)
        sizes = np.random.randint(lo, hi + 1, size=(n, len(spatial)))  # (n, d)
        starts = _sample_boxes(spatial, sizes)  # (n, d)
        fills = [np.random.uniform(0, 1, (img.shape[0], *k)).astype(np.float32) for k in sizes]  # (c, *size) each
        return {"starts": starts, "sizes": sizes, "fills": fills}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if self.value_range is None:
            flat = img.reshape(img.shape[0], -1)
            lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # (c,) before any box is painted
        else:
            lo, hi = torch.tensor(self.value_range, dtype=img.dtype, device=img.device).T  # (c,), (c,)
        view_shape = (-1,) + (1,) * (img.ndim - 1)
        lo, hi = lo.view(view_shape), hi.view(view_shape)  # (c, 1, ..., 1)
        for start, size, fill in zip(params["starts"], params["sizes"], params["fills"]):
            noise = torch.from_numpy(fill).to(img.device, img.dtype)  # (c, *size) in [0, 1)
            img[_box_slices(start, size)] = (lo + noise * (hi - lo)).clamp_(lo, hi)
        return img


def hier_local_transforms(is_2d: bool = False, window: Sequence[tuple[float, float]] | None = None,
                          shuffle: str = "wide") -> BasicTransform:
    """The `hier` method's corruptions of one view (Kats, Hirsch, Heinrich 2024, arXiv 2401.06473, after Models
    Genesis): local voxel shuffling (p=0.8), a monotone Bézier intensity curve (p=0.9) and box in-painting of ~5 %
    of the patch (always). The restoration target is the view before these.

    `window`: per channel (lo, hi) in network units, e.g. `nnssl_plugin.intensity.soft_tissue_windows(plans,
    configuration)`: the Bézier curve acts on that window (voxels outside unchanged) and the in-painting noise spans
    it, like Kats et al.'s corruptions of CT clipped to [−175, 250] HU. None: the crop's own min and max (air and
    bone then take most of the curve). `is_2d` is accepted for parity with `global_view_transforms`: the box sizes
    follow the patch's dimensionality by themselves. `shuffle`: "wide" (`LocalVoxelShuffle`'s blocks up to side/8,
    each its own permutation) or "genesis" (Kats et al.'s scale, `genesis_shuffle.GenesisVoxelShuffle`)."""
    del is_2d
    if shuffle not in ("wide", "genesis"):
        raise ValueError(f"shuffle={shuffle!r} is not one of ('wide', 'genesis')")
    return ComposeTransforms([
        RandomTransform(LocalVoxelShuffle() if shuffle == "wide" else GenesisVoxelShuffle(), apply_probability=0.8),
        RandomTransform(BezierIntensity(window=window), apply_probability=0.9),
        BoxInpainting(value_range=window),
    ])


def voxel2vec_view_transforms(is_2d: bool = False, unit_ranges: Sequence[tuple[float, float]] | None = None,
                              windows: Sequence[tuple[float, float]] | None = None) -> BasicTransform:
    """Global photometric augmentation of one view for the voxel2vec baseline, after vox2vec (Goncharov et al.,
    MICCAI 2023, arXiv 2307.14725): blur or vox2vec's sharpening (p=0.5 together; sharpening α 10-30 after a
    σ 0.5-1 pre-blur, `GaussianSharpen`), Gaussian noise (p=0.5), then a random intensity window per channel
    between `windows` (narrowest) and `unit_ranges` (widest) rescaled back to the unit range (`RandomIntensityWindow`,
    random with p=0.8, otherwise a clip to the unit range). All keep every voxel in place.

    `unit_ranges`, `windows`: per channel (lo, hi) in network units from `nnssl_plugin.intensity.unit_ranges` and
    `soft_tissue_windows`. `is_2d` is accepted for parity with `global_view_transforms`. Blur runs without
    batchgeneratorsv2's FFT benchmark: for sigma <= 1.5 direct convolution is as fast, and the benchmark costs each
    worker ~1 s per new kernel size."""
    del is_2d
    if unit_ranges is None or windows is None:
        raise ValueError(f"voxel2vec's random intensity window needs per-channel unit ranges and soft-tissue windows, "
                         f"found unit_ranges={unit_ranges}, windows={windows}; pass nnssl_plugin.intensity."
                         f"unit_ranges(plans, configuration) and soft_tissue_windows(plans, configuration)")
    return ComposeTransforms([
        RandomTransform(OneOfTransform([
            GaussianBlurTransform(blur_sigma=(0.5, 1.5), synchronize_channels=False, synchronize_axes=False,
                                  p_per_channel=1, benchmark=False),
            GaussianSharpen(),
        ]), apply_probability=0.5),
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                        apply_probability=0.5),
        RandomIntensityWindow(unit_ranges, windows),
    ])


def vox2vec_view_transforms(widest: Sequence[tuple[float, float]], narrowest: Sequence[tuple[float, float]],
                            noise_sd: Sequence[float]) -> BasicTransform:
    """vox2vec's own per-view transforms (Goncharov et al., MICCAI 2023, arXiv 2307.14725), in network units: blur
    (σ 0.25–1.5, `InPlaneGaussianBlur`) or sharpening (`GaussianSharpen`), one of them with p = 0.5, both in the
    axial plane; Gaussian noise with sd ~ U(0, 30 HU) (p = 0.5, `GaussianNoiseSd`); then the random window with lower
    end in [−1350, −1000] HU and upper end in [300, 1000] HU (p = 0.8, otherwise the widest), stretched back over
    the widest window [−1350, 1000] HU (`RandomIntensityWindow`) — the window vox2vec's evaluation reads, so the
    identity of nnU-Net's input here. nnU-Net's CT clip range lies inside every such window, so on nnU-Net's input
    the window is a contrast gain of 1–1.8× and a shift, never a clip.

    `widest`, `narrowest`, `noise_sd`: per channel, from `nnssl_plugin.intensity.vox2vec_windows` and
    `vox2vec_noise_sd`."""
    return ComposeTransforms([
        RandomTransform(OneOfTransform([InPlaneGaussianBlur(), GaussianSharpen()]), apply_probability=0.5),
        RandomTransform(GaussianNoiseSd(noise_sd), apply_probability=0.5),
        RandomIntensityWindow(widest, narrowest),
    ])
