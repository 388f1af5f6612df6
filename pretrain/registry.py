"""Pretraining trainers by name: `nnsslPretrainer_<method>[_<N>epochs][_<M>iters][_seed<K>][_r<hash>]`.

nnU-Net finds a trainer by class name (also in spawned DDP workers, which unpickle it by name). Each name is made
into a subclass of `nnsslPretrainer` on first use, with the method's config and the run length as class attributes:
a variant is a name, not a copy of a class. `_r<hash>`: a non-default optimiser recipe (8 hex digits,
`nnssl_plugin.recipe`), whose values the run's `nnssl_run.json` holds. The grammar is `nnssl_plugin.trainer_names`'s.
Module-level `__getattr__` (PEP 562) makes every valid name an attribute
of this module, so nnU-Net's lookup (`hasattr`) and pickle both find it.
"""
from __future__ import annotations

from nnssl_plugin import trainer_names
from nnssl_plugin.config import method_config
from nnssl_plugin.pretrain.trainer import nnsslPretrainer

PREFIX = trainer_names.PRETRAINER
trainer_name = trainer_names.pretrainer  # format a name (the grammar lives in nnssl_plugin.trainer_names)
_CACHE: dict[str, type] = {}


def trainer_class(name: str) -> type:
    if name in _CACHE:
        return _CACHE[name]
    parsed = trainer_names.parse(name)
    if parsed is None or parsed.base != PREFIX:
        raise AttributeError(name)
    attrs = {"method_config": method_config(parsed.method), "epochs": parsed.epochs,
             "iterations": parsed.iterations, "seed": parsed.seed, "recipe_tag": parsed.recipe_tag,
             "__module__": __name__, "__qualname__": name}
    cls = type(name, (nnsslPretrainer,), attrs)
    _CACHE[name] = cls
    return cls


def __getattr__(name: str) -> type:
    if name.startswith(PREFIX + "_"):
        return trainer_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
