"""Per-view augmentations of the MoCo family's two-view sampler (MoCo v2: Chen et al. 2020, arXiv 2003.04297):
views that nnU-Net's encoder cannot see through.

The planned encoder starts with a convolution followed by instance normalisation, which undoes any positive
affine intensity change: conv(a·x + b) = a·conv(x) + b·Σw, and the normalisation removes the per-channel shift and
scale, so only the zero-padded border and the normalisation's eps leak. Measured on a phantom crop with a 4-stage
PlainConvUNet encoder (tests/data/test_augment.py): multiplicative brightness changes the bottleneck by ~1e-5
(relative); contrast by 0.1–0.3, all of it from the zero-padded border and from clipping to the crop's range
(with replicate padding an unclipped contrast change moves it by ~1e-5). Neither is used. What is used keeps
every voxel where it is (the views' geometry is applied and recorded by the sampler) and moves the bottleneck by
more than 5 % whenever it is applied: by at least 11 % at the end of each range nearest the identity, 12–60 % at
the minimum of random draws:

1. a monotone Bézier curve inside the soft-tissue window (Models Genesis: Zhou et al. 2019, arXiv 1908.06912),
   curves within 0.05 of the identity redrawn;
2. gamma, γ and 1/γ equally often, |log γ| in [log 1.15, log 1.5], on the [min, max]-rescaled crop with the mean
   and sd restored (batchgeneratorsv2's GammaTransform), half of the time on the inverted image so that the curve
   bends at the bright end as often as at the dark end;
3. simulated low resolution (nearest down, linear up) at 0.5–0.9 of the in-plane size;
4. Gaussian blur, σ 0.5–1.0 voxel per axis (direct convolution: no FFT benchmark at these kernel sizes);
5. Gaussian noise, sd 0.05–0.2 in the network's units (2–8 HU at a foreground sd of 40 HU).

Each is applied with its own probability (`GlobalViewConfig`); a view receives none of them with probability
(1 − 0.5)⁴ · (1 − 0.3) ≈ 4.4 % (counted: 16 of 400 random views), against ~26 % for the earlier set
whose brightness and contrast were invisible. Cost, one 128³ channel on one thread: 0.06 s per view on average
(Bézier 0.08 s, blur 0.02 s, the others ≤ 0.02 s when applied), against 0.11 s for the earlier set, whose FFT blur
benchmark cost ~0.8 s per new kernel size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from nnssl_plugin.data.local_augment import BezierIntensity


@dataclass(frozen=True)
class GlobalViewConfig:
    """Probabilities and parameter ranges of `global_view_transforms`; ranges exclude near-identity draws."""

    p_bezier: float = 0.5  # with gamma, a non-linear curve reaches 75 % of views
    bezier_min_deviation: float = 0.05  # measured: weaker curves can move the bottleneck by < 5 %
    p_gamma: float = 0.5  # second, smoother family of monotone curves, independent of the Bézier one
    gamma_range: tuple[float, float] = (1.15, 1.5)  # γ or 1/γ; 1.15 moves the bottleneck >= 10 %, 1.5 as nnU-Net
    p_invert_gamma: float = 0.5  # bend the bright end as often as the dark end
    p_low_res: float = 0.3  # the strongest change (>= 57 %), erases fine texture: a minority of views (nnU-Net 0.25)
    low_res_scale: tuple[float, float] = (0.5, 0.9)  # nnU-Net's 0.5 floor; above ~0.99 the size rounds to identity
    p_blur: float = 0.5  # MoCo v2 blurs half of the views
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # nnU-Net's range; σ < 0.4 has a near-delta 3-tap kernel
    p_noise: float = 0.5  # cheap; half of the views
    noise_sd: tuple[float, float] = (0.05, 0.2)  # network units; 0.05 moves the bottleneck ~13 %, 0.2 ~ a dose change

    def no_change_probability(self) -> float:
        """Probability that a view receives none of the transforms (they are drawn independently)."""
        return math.prod(1.0 - p for p in (self.p_bezier, self.p_gamma, self.p_low_res, self.p_blur, self.p_noise))


class GammaBothWays:
    """Picklable sampler of γ: log γ uniform in ±[log lo, log hi], each sign with probability 1/2, so γ > 1 and
    γ < 1 are equally likely and symmetric in the log (γ and 1/γ). Called by batchgeneratorsv2 as
    `sample_scalar(gamma, image=..., channel=...)`; its arguments are ignored."""

    def __init__(self, lo: float, hi: float):
        if not 1.0 < lo <= hi:
            raise ValueError(f"gamma range must satisfy 1 < lo <= hi, found ({lo}, {hi}); give the γ > 1 side, "
                             f"e.g. (1.15, 1.5): 1/γ is drawn as often")
        self.lo, self.hi = float(lo), float(hi)

    def __call__(self, *args, **kwargs) -> float:
        log_gamma = np.random.uniform(math.log(self.lo), math.log(self.hi))
        return float(math.exp(log_gamma if np.random.uniform() < 0.5 else -log_gamma))

    def __repr__(self) -> str:
        return f"GammaBothWays({self.lo}, {self.hi})"


def global_view_transforms(is_2d: bool = False, windows: Sequence[tuple[float, float]] | None = None,
                           config: GlobalViewConfig = GlobalViewConfig()) -> BasicTransform:
    """Photometric augmentation of one MoCo view, in this order: Bézier curve in `windows`, gamma, low resolution,
    blur, noise (the curve first, while intensities are still in the units the windows are given in).

    Args:
        is_2d: 2D patches; in 3D the low-resolution simulation leaves the (often thick-slice) z axis alone.
        windows: per input channel (lo, hi) in network units where the Bézier curve acts, normally
            `nnssl_plugin.intensity.soft_tissue_windows(plans, configuration)`; None uses each crop's [min, max].
        config: probabilities and ranges.
    Input and output: `image` tensor (c, *spatial), modified in place.
    """
    c = config
    return ComposeTransforms([
        RandomTransform(BezierIntensity(window=windows, min_deviation=c.bezier_min_deviation),
                        apply_probability=c.p_bezier),
        RandomTransform(GammaTransform(gamma=GammaBothWays(*c.gamma_range), p_invert_image=c.p_invert_gamma,
                                       synchronize_channels=False, p_per_channel=1, p_retain_stats=1),
                        apply_probability=c.p_gamma),
        RandomTransform(SimulateLowResolutionTransform(scale=c.low_res_scale, synchronize_channels=False,
                                                       synchronize_axes=True, ignore_axes=None if is_2d else (0,),
                                                       allowed_channels=None, p_per_channel=1),
                        apply_probability=c.p_low_res),
        RandomTransform(GaussianBlurTransform(blur_sigma=c.blur_sigma, synchronize_channels=False,
                                              synchronize_axes=False, p_per_channel=1, benchmark=False),
                        apply_probability=c.p_blur),
        RandomTransform(GaussianNoiseTransform(noise_variance=c.noise_sd, p_per_channel=1, synchronize_channels=True),
                        apply_probability=c.p_noise),
    ])
