"""What a method family declares, in one object (`Family`): the trainer, the log, the plots, the held-out hook, the
probe and the export read it and never branch on a family's name (docs/ARCHITECTURE.md, "The methods").

Each family folder (`nnssl_plugin/methods/<family>/`) defines its `FAMILY` in `family.py`; `nnssl_plugin.families`
lists the folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nnssl_plugin.modules.network_protocol import PretrainingNetwork
from nnssl_plugin.modules.probe_levels import level_set_for
from nnssl_plugin.recipe import Recipe


@dataclass(frozen=True)
class Family:
    """name: the `family` its configs name; network: the class whose `from_plan` builds the pretraining network;
    views(config, is_2d, plans, configuration) -> the two-view loader's options; heldout(network, batches, device,
    loss_batches, precision) -> the held-out values; heldout_negatives(crops) -> what one held-out query is scored
    against, for the log; recipe: the default optimiser recipe; loss_terms: the keys of `StepOutput["terms"]` it
    may return (each logged per epoch and drawn in progress.png); batch_keys: the loader's tensors its forward takes
    on the device; geometry_keys: the loader's entries its forward takes on the CPU."""
    name: str
    network: type[PretrainingNetwork]
    views: Callable[..., dict]
    heldout: Callable[..., dict]
    heldout_negatives: Callable[[int], str]
    recipe: Recipe
    loss_terms: tuple[str, ...]
    batch_keys: tuple[str, ...]
    geometry_keys: tuple[str, ...] = ()

    @property
    def level_set(self) -> str:
        """The level set a probe of this family's exports reads ("encoder" or "decoder", modules/probe_levels.py):
        from the state-dict prefixes its network pretrains."""
        return level_set_for(self.network.pretrained_prefixes)
