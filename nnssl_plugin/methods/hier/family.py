"""The hierarchical dense family (hier, voxel2vec) as the one object the trainer, the log, the plots, the held-out
hook, the probe and the export read (`nnssl_plugin.methods.family.Family`)."""
from __future__ import annotations

from nnssl_plugin.methods.family import Family
from nnssl_plugin.methods.hier.config import RECIPE
from nnssl_plugin.methods.hier.heldout import GEOMETRY_KEYS, evaluate_hier
from nnssl_plugin.methods.hier.network import HierNetwork
from nnssl_plugin.methods.hier.views import hier_views

FAMILY = Family(
    name="hier", network=HierNetwork, views=hier_views, heldout=evaluate_hier,
    heldout_negatives=lambda crops: "2V - 2 negatives per voxel for V voxels of a batch, as in training",
    recipe=RECIPE,
    loss_terms=("loss_voxel", "loss_restore"),  # voxel NT-Xent; hier's restoration MSE (weighted)
    batch_keys=("view1", "view2", "clean1", "clean2", "voxels1", "voxels2", "voxel_batch"),
    geometry_keys=GEOMETRY_KEYS,
    # the papers' own views, scored for every run: Kats et al.'s shuffle scale, vox2vec's windows, blur and noise
    common_views=(("hier_paper", "hier", (("shuffle", "genesis"),)),
                  ("voxel2vec_paper", "voxel2vec", (("view_windows", "vox2vec"),))),
)
