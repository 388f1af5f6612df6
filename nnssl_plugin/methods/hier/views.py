"""The hierarchical dense family's two views, as options of the two-view sampler (`TwoViewDataLoader(dataset,
batch_size, patch, label_manager, **options)`): two unscaled crops with `num_voxels` sampled corresponding voxels,
translation only unless `flips`; hier's corruptions (shuffling, Bézier curve, in-painting,
`local_augment.hier_local_transforms`, the loader also returns the clean crops for the restoration; Kats et al. 2024,
arXiv 2401.06473) or voxel2vec's per-view transforms (`local_augment.voxel2vec_view_transforms`, after vox2vec:
Goncharov et al. 2023, arXiv 2307.14725). Intensity windows and ranges come from the plans' CT statistics
(`nnssl_plugin.intensity`).
"""
from __future__ import annotations

from nnssl_plugin.data.local_augment import hier_local_transforms, vox2vec_view_transforms, voxel2vec_view_transforms
from nnssl_plugin.intensity import soft_tissue_windows, unit_ranges, vox2vec_noise_sd, vox2vec_windows
from nnssl_plugin.methods.hier.config import HierConfig


def photometric_views(config: HierConfig, is_2d: bool, plans: dict, configuration: dict):
    """voxel2vec's per-view photometric transforms: config.view_windows "soft_tissue" (a window narrowing from the
    plans' clip range into soft tissue) or "vox2vec" (vox2vec's own, `local_augment.vox2vec_view_transforms`)."""
    if config.view_windows == "vox2vec":
        widest, narrowest = vox2vec_windows(plans, configuration)
        return vox2vec_view_transforms(widest, narrowest, vox2vec_noise_sd(plans, configuration))
    return voxel2vec_view_transforms(is_2d, unit_ranges(plans, configuration), soft_tissue_windows(plans, configuration))


def hier_views(config: HierConfig, is_2d: bool, plans: dict, configuration: dict) -> dict:
    """The hier family's loader options (config.augmentation "local": hier's corruptions, after voxel2vec's
    photometric transforms with config.photometric_views; "global": voxel2vec's photometric transforms)."""
    windows = soft_tissue_windows(plans, configuration)
    if config.augmentation == "local":
        options = {"view_transforms": (photometric_views(config, is_2d, plans, configuration)
                                       if config.photometric_views else None),
                   "local_transforms": hier_local_transforms(is_2d, windows, config.shuffle)}
    else:
        options = {"view_transforms": photometric_views(config, is_2d, plans, configuration)}
    options["num_voxels"] = config.num_voxels
    options["pairs_per_case"] = config.pairs_per_case
    options["mirror_axes"] = None if config.flips else ()  # Kats et al., vox2vec: translation-only views
    return options
