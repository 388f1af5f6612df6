"""The two views each method family trains on, as options of the two-view sampler (`TwoViewDataLoader(dataset,
batch_size, patch, label_manager, **options)`); `families.py` names which function a family uses.

- `global_views` (MoCo family: MoCo v2, Chen et al. 2020, arXiv 2003.04297; moco_zca, Hassanpour et al. 2024,
  arXiv 2402.14611): two crops shifted by up to `view_shift` of a patch (and rescaled by `view_scale`), each with the
  photometric augmentations of `augment.global_view_transforms`, mirroring on every axis.
- `dense_views` (hier: Kats et al. 2024, arXiv 2401.06473; voxel2vec after vox2vec, Goncharov et al. 2023,
  arXiv 2307.14725): two unscaled crops with `num_voxels` sampled corresponding voxels, translation only unless
  `flips`; hier's corruptions (shuffling, Bézier curve, in-painting, `local_augment.hier_local_transforms`, the
  loader also returns the clean crops for the restoration) or voxel2vec's per-view transforms
  (`local_augment.voxel2vec_view_transforms`).

Both take the method's config and the plans (intensity windows and ranges come from the plans' CT statistics,
`nnssl_plugin.intensity`).
"""
from __future__ import annotations

from nnssl_plugin.config import HierConfig, MocoConfig
from nnssl_plugin.data.augment import global_view_transforms
from nnssl_plugin.data.local_augment import hier_local_transforms, voxel2vec_view_transforms
from nnssl_plugin.intensity import soft_tissue_windows, unit_ranges


def global_views(config: MocoConfig, is_2d: bool, plans: dict, configuration: dict) -> dict:
    """The MoCo family's loader options."""
    return {"view_transforms": global_view_transforms(is_2d, soft_tissue_windows(plans, configuration)),
            "max_shift": config.view_shift, "scale_range": config.view_scale}


def dense_views(config: HierConfig, is_2d: bool, plans: dict, configuration: dict) -> dict:
    """The dense family's loader options (config.augmentation "local": hier's corruptions; "global": voxel2vec's)."""
    windows = soft_tissue_windows(plans, configuration)
    if config.augmentation == "local":
        options = {"view_transforms": None, "local_transforms": hier_local_transforms(is_2d, windows)}
    else:
        options = {"view_transforms": voxel2vec_view_transforms(is_2d, unit_ranges(plans, configuration), windows)}
    options["num_voxels"] = config.num_voxels
    options["mirror_axes"] = None if config.flips else ()  # Kats et al., vox2vec: translation-only views
    return options
