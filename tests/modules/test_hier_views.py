"""The hier family's loader options for the papers' recipes: Kats et al.'s shuffle scale, vox2vec's own views,
several crop pairs per case, and vox2vec's photometric transforms before hier's corruptions."""
from __future__ import annotations

from dataclasses import replace

from nnssl_plugin.config import method_config
from nnssl_plugin.data.genesis_shuffle import GenesisVoxelShuffle
from nnssl_plugin.data.local_augment import LocalVoxelShuffle
from nnssl_plugin.data.vox2vec_augment import GaussianNoiseSd, InPlaneGaussianBlur, RandomIntensityWindow
from nnssl_plugin.intensity import soft_tissue_windows, unit_ranges, vox2vec_windows
from nnssl_plugin.methods.hier.views import hier_views

PLANS = {"foreground_intensity_properties_per_channel": {"0": {"mean": 94.0, "std": 71.0, "percentile_00_5": -429.0,
                                                               "percentile_99_5": 209.0}}}
CONFIGURATION = {"normalization_schemes": ["CTNormalization"]}


def _parts(transform):
    return [getattr(t, "transform", t) for t in transform.transforms]


def test_todays_hier_and_voxel2vec_views_are_unchanged_by_the_new_fields():
    hier = hier_views(method_config("hier"), False, PLANS, CONFIGURATION)
    assert hier["view_transforms"] is None and hier["pairs_per_case"] == 1
    assert isinstance(_parts(hier["local_transforms"])[0], LocalVoxelShuffle)
    window = _parts(hier_views(method_config("voxel2vec"), False, PLANS, CONFIGURATION)["view_transforms"])[-1]
    assert [r for r, _ in window.ranges] == unit_ranges(PLANS, CONFIGURATION)
    assert [w for _, w in window.ranges] == soft_tissue_windows(PLANS, CONFIGURATION)


def test_paper_recipes_reach_the_loader():
    hier = replace(method_config("hier"), shuffle="genesis", pairs_per_case=2, photometric_views=True,
                   view_windows="vox2vec")
    options = hier_views(hier, False, PLANS, CONFIGURATION)
    assert isinstance(_parts(options["local_transforms"])[0], GenesisVoxelShuffle) and options["pairs_per_case"] == 2
    blur_or_sharpen, noise, window = _parts(options["view_transforms"])  # vox2vec's, before the corruptions
    assert InPlaneGaussianBlur in {type(t) for t in blur_or_sharpen.list_of_transforms}
    assert isinstance(noise, GaussianNoiseSd) and isinstance(window, RandomIntensityWindow)
    widest, narrowest = vox2vec_windows(PLANS, CONFIGURATION)
    assert [r for r, _ in window.ranges] == widest and [w for _, w in window.ranges] == narrowest
    v2v = replace(method_config("voxel2vec"), view_windows="vox2vec", pairs_per_case=2)
    options = hier_views(v2v, False, PLANS, CONFIGURATION)
    assert "local_transforms" not in options and options["pairs_per_case"] == 2
    assert isinstance(_parts(options["view_transforms"])[1], GaussianNoiseSd)
