"""The view sets of the held-out pretext on common views: the same for every run of a family (the family's name is
all they read of a run), one crop pair per case, the papers' own views among them."""
from __future__ import annotations

from nnssl_plugin.cli.common_views import CLEAN, common_view_sets
from nnssl_plugin.data.genesis_shuffle import GenesisVoxelShuffle
from nnssl_plugin.data.vox2vec_augment import GaussianNoiseSd

PLANS = {"foreground_intensity_properties_per_channel": {"0": {"mean": 94.0, "std": 71.0, "percentile_00_5": -429.0,
                                                               "percentile_99_5": 209.0}}}
CONFIGURATION = {"normalization_schemes": ["CTNormalization"]}


def test_dense_view_sets_are_clean_each_members_and_the_papers_with_one_pair_per_case():
    sets = common_view_sets("hier", False, PLANS, CONFIGURATION)
    assert list(sets) == [CLEAN, "hier", "voxel2vec", "hier_paper", "voxel2vec_paper"]
    assert all(options["pairs_per_case"] == 1 for options in sets.values())
    assert sets[CLEAN]["view_transforms"] is None and sets[CLEAN]["local_transforms"] is None
    assert isinstance(sets["hier_paper"]["local_transforms"].transforms[0].transform, GenesisVoxelShuffle)
    assert isinstance(sets["voxel2vec_paper"]["view_transforms"].transforms[1].transform, GaussianNoiseSd)


def test_moco_view_sets_are_clean_and_each_members():
    sets = common_view_sets("moco", False, PLANS, CONFIGURATION)
    assert list(sets) == [CLEAN, "moco", "moco_zca", "moco_regions"]
