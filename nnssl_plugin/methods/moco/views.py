"""The MoCo family's two views, as options of the two-view sampler (`TwoViewDataLoader(dataset, batch_size, patch,
label_manager, **options)`): two crops shifted by up to `view_shift` of a patch (and rescaled by `view_scale`), each
with the photometric augmentations of `augment.global_view_transforms`, mirroring on every axis (MoCo v2: Chen et al.
2020, arXiv 2003.04297; moco_zca: Hassanpour et al. 2024, arXiv 2402.14611). Intensity windows come from the plans'
CT statistics (`nnssl_plugin.intensity`).
"""
from __future__ import annotations

from nnssl_plugin.data.augment import global_view_transforms
from nnssl_plugin.intensity import soft_tissue_windows
from nnssl_plugin.methods.moco.config import MocoConfig


def moco_views(config: MocoConfig, is_2d: bool, plans: dict, configuration: dict) -> dict:
    """The MoCo family's loader options."""
    return {"view_transforms": global_view_transforms(is_2d, soft_tissue_windows(plans, configuration)),
            "max_shift": config.view_shift, "scale_range": config.view_scale}
