"""Per-view augmentations for the two-view sampler, built from batchgeneratorsv2 transforms.

Only transforms that keep every voxel where it is (intensity, noise, blur, simulated low resolution): the views'
geometry (crop offset and mirroring) is applied and recorded by the sampler, so correspondences stay exact.
Probabilities are higher than nnU-Net's supervised ones (brightness and contrast almost always): a pretext task
whose views differ only slightly is solved within a few hundred steps (DESIGN §8). Noise and blur, the costly
ones, stay at 0.3 so that two views per case cost about what nnU-Net's loader spends on one.
"""
from __future__ import annotations

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform


def global_view_transforms(is_2d: bool = False) -> BasicTransform:
    """Photometric augmentation of one view (MoCo family): noise, blur, brightness, contrast, low resolution,
    gamma. Input and output: `image` tensor (c, *spatial)."""
    return ComposeTransforms([
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
                                               synchronize_channels=True), apply_probability=0.3),
        RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.5), synchronize_channels=False,
                                              synchronize_axes=False, p_per_channel=1, benchmark=True),
                        apply_probability=0.3),
        RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.7, 1.3)),
                                                          synchronize_channels=False, p_per_channel=1),
                        apply_probability=0.8),
        RandomTransform(ContrastTransform(contrast_range=BGContrast((0.6, 1.4)), preserve_range=True,
                                          synchronize_channels=False, p_per_channel=1), apply_probability=0.8),
        RandomTransform(SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False,
                                                       synchronize_axes=True, ignore_axes=(0,) if not is_2d else None,
                                                       allowed_channels=None, p_per_channel=1),
                        apply_probability=0.25),
        RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=0.3),
    ])
