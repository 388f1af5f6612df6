"""The one table of method families: for each `family` a method config names (config.py), the pretraining network
(a `PretrainingNetwork`, modules/network_protocol.py), the two views its loader draws (data/views.py) and its
held-out evaluation (heldout.py). The trainer, the held-out hook and the probe's level sets read this table and
never branch on a family's name (docs/ARCHITECTURE.md, "The methods" and "Adding a fifth method").

Families: "moco" (moco, moco_zca: He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297; Hassanpour
et al. 2024, arXiv 2402.14611) and "hier" (hier, voxel2vec: Kats et al. 2024, arXiv 2401.06473; Goncharov et al.
2023, arXiv 2307.14725). The optimiser recipe of a family is `recipe.DEFAULTS[family]` (a lower layer: the run
record reads it without torch modules).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nnssl_plugin.config import MethodConfig, method_config
from nnssl_plugin.data.views import dense_views, global_views
from nnssl_plugin.heldout import evaluate_dense, evaluate_moco
from nnssl_plugin.modules.hier_net import HierNetwork
from nnssl_plugin.modules.moco_net import MocoNetwork
from nnssl_plugin.modules.network_protocol import PretrainingNetwork
from nnssl_plugin.modules.probe_levels import level_set_for


@dataclass(frozen=True)
class Family:
    """network: the class whose `from_plan` builds the pretraining network; views(config, is_2d, plans,
    configuration) -> the two-view loader's options; heldout(network, batches, device, loss_batches) -> the held-out
    values (`evaluate_moco` / `evaluate_dense`); heldout_negatives(crops) -> what one held-out query is scored
    against, for the log."""
    name: str
    network: type[PretrainingNetwork]
    views: Callable[[MethodConfig, bool, dict, dict], dict]
    heldout: Callable[..., dict]
    heldout_negatives: Callable[[int], str]


FAMILIES: dict[str, Family] = {
    "moco": Family("moco", MocoNetwork, global_views, evaluate_moco,
                   lambda crops: f"{crops - 1} negatives per query: top-1 chance 1/{crops}"),
    "hier": Family("hier", HierNetwork, dense_views, evaluate_dense,
                   lambda crops: "2V - 2 negatives per voxel for V voxels of a batch, as in training"),
}


def family_of(config: MethodConfig) -> Family:
    """The family row of a method config (one line naming the known families if its `family` has none)."""
    if config.family not in FAMILIES:
        raise KeyError(f"method '{config.method}' names family '{config.family}', which nnssl_plugin.families does "
                       f"not define; known: {', '.join(FAMILIES)}")
    return FAMILIES[config.family]


def level_set_of_method(method: str) -> str:
    """The level set a probe of `method`'s exports reads ("encoder" or "decoder", modules/probe_levels.py): from the
    state-dict prefixes its pretraining network carries."""
    return level_set_for(family_of(method_config(method)).network.pretrained_prefixes)
