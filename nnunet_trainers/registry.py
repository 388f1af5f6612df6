"""Every trainer of the plugin by name, for nnU-Net's lookup through the nnUNet_extTrainer shim.

Downstream: `nnUNetTrainerSSL{Init,Scratch,FrozenEncoder,Linear}[_<N>epochs][_<M>iters][_seed<K>][_noTTA]` (noTTA:
the final validation without test-time mirroring, 8× fewer network passes in 3d: for CPU runs); pretraining:
`nnsslPretrainer_<method>[...]` (delegated to the pretraining registry). A variant is a subclass made on first use
with the length and seed as class attributes — a name, not a copy of a class; `__module__` points here so that
pickle (spawned DDP workers) finds it by name again. The grammar is `nnssl_plugin.trainer_names`'s.
"""
from __future__ import annotations

from nnssl_plugin import trainer_names
from nnssl_plugin.nnunet_trainers import ssl_trainers

BASES = {name: getattr(ssl_trainers, name) for name in trainer_names.DOWNSTREAM_BASES}
_CACHE: dict[str, type] = {}


def trainer_class(name: str) -> type:
    if name.startswith(trainer_names.PRETRAINER + "_"):
        from nnssl_plugin.pretrain.registry import trainer_class as pretrainer_class

        return pretrainer_class(name)
    if name in BASES:
        return BASES[name]
    if name in _CACHE:
        return _CACHE[name]
    parsed = trainer_names.parse(name)
    if parsed is None or parsed.base not in BASES:
        raise AttributeError(name)
    attrs = {"epochs": parsed.epochs, "iterations": parsed.iterations, "seed": parsed.seed,
             "validation_mirroring": not parsed.no_tta, "__module__": __name__, "__qualname__": name}
    cls = type(name, (BASES[parsed.base],), attrs)
    _CACHE[name] = cls
    return cls


def __getattr__(name: str) -> type:
    try:
        return trainer_class(name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
