"""The hierarchical dense family's two views, as options of the two-view sampler (`TwoViewDataLoader(dataset,
batch_size, patch, label_manager, **options)`): two unscaled crops with `num_voxels` sampled corresponding voxels,
translation only unless `flips`; hier's corruptions (shuffling, Bézier curve, in-painting,
`local_augment.hier_local_transforms`, the loader also returns the clean crops for the restoration; Kats et al. 2024,
arXiv 2401.06473) or voxel2vec's per-view transforms (`local_augment.voxel2vec_view_transforms`, after vox2vec:
Goncharov et al. 2023, arXiv 2307.14725). Intensity windows and ranges come from the plans' CT statistics
(`nnssl_plugin.intensity`).
"""
from __future__ import annotations

from nnssl_plugin.data.local_augment import hier_local_transforms, voxel2vec_view_transforms
from nnssl_plugin.intensity import soft_tissue_windows, unit_ranges
from nnssl_plugin.methods.hier.config import HierConfig


def hier_views(config: HierConfig, is_2d: bool, plans: dict, configuration: dict) -> dict:
    """The hier family's loader options (config.augmentation "local": hier's corruptions; "global": voxel2vec's)."""
    windows = soft_tissue_windows(plans, configuration)
    if config.augmentation == "local":
        options = {"view_transforms": None, "local_transforms": hier_local_transforms(is_2d, windows)}
    else:
        options = {"view_transforms": voxel2vec_view_transforms(is_2d, unit_ranges(plans, configuration), windows)}
    options["num_voxels"] = config.num_voxels
    options["mirror_axes"] = None if config.flips else ()  # Kats et al., vox2vec: translation-only views
    return options
