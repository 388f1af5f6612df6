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
    on the device; geometry_keys: the loader's entries its forward takes on the CPU; whitening: the name of the
    network's bottleneck whitening (a `RunningWhitening` attribute, its state-dict prefix too) that the
    pretrained-weights file and the export carry, or None when the family has none; common_views: view sets every
    run of the family is also scored on by `nnssl_plugin.cli.common_views`, beyond clean views and each member's
    default views: name -> (member method, config options), e.g. the papers' own views."""
    name: str
    network: type[PretrainingNetwork]
    views: Callable[..., dict]
    heldout: Callable[..., dict]
    heldout_negatives: Callable[[int], str]
    recipe: Recipe
    loss_terms: tuple[str, ...]
    batch_keys: tuple[str, ...]
    geometry_keys: tuple[str, ...] = ()
    whitening: str | None = None
    common_views: tuple[tuple[str, str, tuple[tuple[str, object], ...]], ...] = ()  # (name, method, options)

    @property
    def pretrained_prefixes(self) -> tuple[str, ...]:
        """The state-dict prefixes of the planned U-Net that its pretraining provides (the network class's)."""
        return self.network.pretrained_prefixes

    def exported_whitening(self, network) -> dict | None:
        """The whitening `network` (this family's) carries into the pretrained-weights file, or None."""
        module = getattr(network, self.whitening) if self.whitening else None
        return module.exported() if module is not None else None

    def whitening_in_state(self, state: dict) -> dict | None:
        """The same, read from a checkpoint's network state (eps and mode are not in it: None)."""
        if not self.whitening or f"{self.whitening}.w" not in state:
            return None
        w = state[f"{self.whitening}.w"]
        return {"mean": state[f"{self.whitening}.mean"], "w": w, "groups": int(w.shape[0]), "eps": None}

    @property
    def level_set(self) -> str:
        """The level set a probe of this family's exports reads ("encoder" or "decoder", modules/probe_levels.py):
        from the state-dict prefixes its network pretrains."""
        return level_set_for(self.pretrained_prefixes)
