"""The method families, one folder each (`nnssl_plugin/methods/<family>/`), each declaring itself in one `Family`
object (`methods/family.py`): network, views, held-out evaluation, default recipe, logged loss terms, batch keys and
probe level set. The trainer, the log, the plots, the held-out hook, the probe and the export read that object and
never branch on a family's name (docs/ARCHITECTURE.md, "The methods" and "Adding a family").
"""
from __future__ import annotations

from nnssl_plugin.config import MethodConfig, method_config
from nnssl_plugin.methods.family import Family
from nnssl_plugin.methods.hier.family import FAMILY as HIER
from nnssl_plugin.methods.moco.family import FAMILY as MOCO

FAMILIES: dict[str, Family] = {family.name: family for family in (MOCO, HIER)}


def family_of(config: MethodConfig) -> Family:
    """The family of a method config (one line naming the known families if its `family` has none)."""
    if config.family not in FAMILIES:
        raise KeyError(f"method '{config.method}' names family '{config.family}', which nnssl_plugin.families does "
                       f"not define; known: {', '.join(FAMILIES)}")
    return FAMILIES[config.family]


def family_of_method(method: str) -> Family:
    """The family of a method name (`config.method_config` names the known methods if it is none)."""
    return family_of(method_config(method))


def level_set_of_method(method: str) -> str:
    """The level set a probe of `method`'s exports reads ("encoder" or "decoder", modules/probe_levels.py)."""
    return family_of_method(method).level_set
