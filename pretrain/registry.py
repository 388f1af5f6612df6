"""Pretraining trainers by name: `nnsslPretrainer_<method>[_<N>epochs][_<M>iters][_seed<K>][_r<hash>]`.

nnU-Net finds a trainer by class name (also in spawned DDP workers, which unpickle it by name). Each name is made
into a subclass of `nnsslPretrainer` on first use, with the method's config and the run length as class attributes:
a variant is a name, not a copy of a class. `_r<hash>`: a non-default optimiser recipe (8 hex digits,
`nnssl_plugin.recipe`), whose values the run's `nnssl_run.json` holds. Module-level `__getattr__` (PEP 562) makes every valid name an attribute
of this module, so nnU-Net's lookup (`hasattr`) and pickle both find it.
"""
from __future__ import annotations

import re

from nnssl_plugin.config import METHODS, method_config
from nnssl_plugin.pretrain.trainer import nnsslPretrainer

PREFIX = "nnsslPretrainer"
_NAME = re.compile(rf"^{PREFIX}_(?P<method>{'|'.join(sorted(METHODS, key=len, reverse=True))})"
                   r"(?:_(?P<epochs>\d+)epochs)?(?:_(?P<iters>\d+)iters)?(?:_seed(?P<seed>\d+))?"
                   r"(?:_r(?P<recipe>[0-9a-f]{8}))?$")
_CACHE: dict[str, type] = {}


def trainer_name(method: str, epochs: int | None = None, iterations: int | None = None,
                 seed: int | None = None, recipe_tag: str | None = None) -> str:
    method_config(method)  # validates the method
    name = f"{PREFIX}_{method}"
    if epochs is not None:
        name += f"_{epochs}epochs"
    if iterations is not None:
        name += f"_{iterations}iters"
    if seed is not None:
        name += f"_seed{seed}"
    if recipe_tag is not None:
        name += f"_r{recipe_tag}"
    return name


def trainer_class(name: str) -> type:
    if name in _CACHE:
        return _CACHE[name]
    match = _NAME.match(name)
    if match is None:
        raise AttributeError(name)
    attrs = {"method_config": method_config(match["method"]),
             "epochs": int(match["epochs"]) if match["epochs"] else None,
             "iterations": int(match["iters"]) if match["iters"] else None,
             "seed": int(match["seed"]) if match["seed"] else None,
             "recipe_tag": match["recipe"],
             "__module__": __name__, "__qualname__": name}
    cls = type(name, (nnsslPretrainer,), attrs)
    _CACHE[name] = cls
    return cls


def __getattr__(name: str) -> type:
    if name.startswith(PREFIX + "_"):
        return trainer_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
