"""The MoCo family (moco, moco_zca) as the one object the trainer, the log, the plots, the held-out hook, the probe
and the export read (`nnssl_plugin.methods.family.Family`)."""
from __future__ import annotations

from nnssl_plugin.data.two_view import GEOMETRY_KEYS
from nnssl_plugin.methods.family import Family
from nnssl_plugin.methods.moco.config import RECIPE
from nnssl_plugin.methods.moco.heldout import evaluate_moco
from nnssl_plugin.methods.moco.network import MocoNetwork
from nnssl_plugin.methods.moco.views import moco_views

FAMILY = Family(
    name="moco", network=MocoNetwork, views=moco_views, heldout=evaluate_moco,
    heldout_negatives=lambda crops: f"{crops - 1} negatives per query: top-1 chance 1/{crops}",
    recipe=RECIPE,
    loss_terms=("loss_global", "loss_local"),  # InfoNCE vs the queue; moco_zca's region InfoNCE (weighted)
    batch_keys=("view1", "view2", "case_ids"),  # case ids mask same-case queue keys
    geometry_keys=GEOMETRY_KEYS,  # the local loss aligns regions of the two views in case coordinates
    whitening="whitening",  # MocoNetwork.whitening: per channel (moco) or ZCA per group (moco_zca), or None
)
