"""The one grammar of the plugin's trainer names: parse, format and the run-folder pattern. The registries
(`nnssl_plugin.pretrain.registry`, `nnssl_plugin.nnunet_trainers.registry`) make the classes from a parsed name;
everything else that reads or builds a name calls this module.

    pretraining:  nnsslPretrainer_<method>[_<N>epochs][_<M>iters][_seed<K>][_r<hash>]
    downstream:   <base>[_<N>epochs][_<M>iters][_seed<K>][_noTTA]     base: nnUNetTrainerSSL{Init,Scratch,…}

`_r<hash>`: 8 hex digits of a non-default pretraining recipe and method options (`nnssl_plugin.recipe`); `_noTTA`:
the final validation without test-time mirroring. A run's folder is `<trainer>__<plans>__<configuration>`
(nnU-Net's), its fold folder `fold_<f>` (`fold_all` for pretraining). The core never imports the trainers, so the downstream bases are named here, not looked up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from nnssl_plugin.config import METHODS

PRETRAINER = "nnsslPretrainer"
DOWNSTREAM_BASES = ("nnUNetTrainerSSLInit", "nnUNetTrainerSSLScratch", "nnUNetTrainerSSLFrozenEncoder",
                    "nnUNetTrainerSSLLinear")
_LENGTH_SEED = r"(?:_(?P<epochs>\d+)epochs)?(?:_(?P<iters>\d+)iters)?(?:_seed(?P<seed>\d+))?"
_PRETRAINER = re.compile(rf"^{PRETRAINER}_(?P<method>{'|'.join(sorted(METHODS, key=len, reverse=True))})"
                         rf"{_LENGTH_SEED}(?:_r(?P<recipe>[0-9a-f]{{8}}))?$")
_DOWNSTREAM = re.compile(rf"^(?P<base>{'|'.join(sorted(DOWNSTREAM_BASES, key=len, reverse=True))})"
                         rf"{_LENGTH_SEED}(?P<notta>_noTTA)?$")


@dataclass(frozen=True)
class TrainerName:
    base: str  # "nnsslPretrainer" or one of DOWNSTREAM_BASES
    method: str | None = None  # pretraining only
    epochs: int | None = None
    iterations: int | None = None
    seed: int | None = None
    recipe_tag: str | None = None  # pretraining only
    no_tta: bool = False  # downstream only

    def __str__(self) -> str:
        name = f"{self.base}_{self.method}" if self.base == PRETRAINER else self.base
        if self.epochs is not None:
            name += f"_{self.epochs}epochs"
        if self.iterations is not None:
            name += f"_{self.iterations}iters"
        if self.seed is not None:
            name += f"_seed{self.seed}"
        if self.recipe_tag is not None:
            name += f"_r{self.recipe_tag}"
        return name + ("_noTTA" if self.no_tta else "")


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def parse(name: str) -> TrainerName | None:
    """The parts of a pretraining or downstream trainer name, or None for any other name."""
    if match := _PRETRAINER.match(name):
        return TrainerName(PRETRAINER, match["method"], _int(match["epochs"]), _int(match["iters"]),
                           _int(match["seed"]), match["recipe"])
    if match := _DOWNSTREAM.match(name):
        return TrainerName(match["base"], None, _int(match["epochs"]), _int(match["iters"]), _int(match["seed"]),
                           no_tta=bool(match["notta"]))
    return None


def pretrainer(method: str, epochs: int | None = None, iterations: int | None = None, seed: int | None = None,
               recipe_tag: str | None = None) -> str:
    if method not in METHODS:
        raise KeyError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    return str(TrainerName(PRETRAINER, method, epochs, iterations, seed, recipe_tag))


def downstream(base: str, epochs: int | None = None, iterations: int | None = None, seed: int | None = None,
               no_tta: bool = False) -> str:
    if base not in DOWNSTREAM_BASES:
        raise KeyError(f"unknown downstream trainer '{base}'; choose one of {', '.join(DOWNSTREAM_BASES)}")
    return str(TrainerName(base, None, epochs, iterations, seed, no_tta=no_tta))


def method_of(name: str) -> str | None:
    """The method of a pretraining trainer name, or None."""
    parsed = parse(name)
    return parsed.method if parsed is not None and parsed.base == PRETRAINER else None


def run_folder(trainer: str, plans: str, configuration: str) -> str:
    """nnU-Net's results folder name of a run (the fold folder lies inside it)."""
    return f"{trainer}__{plans}__{configuration}"


def trainer_of_run_folder(folder_name: str) -> str:
    """The trainer part of a `run_folder` name (the name itself when it is no run folder)."""
    return folder_name.split("__")[0]


def fold_folder(fold: int | str) -> str:
    """nnU-Net's fold folder inside a run folder: `fold_<f>` (pretraining runs: `fold_all`)."""
    return f"fold_{fold}"


PRETRAINING_FOLD = fold_folder("all")


def run_log(trainer: str, plans: str, configuration: str, fold: int | str) -> str:
    """The log file name of one nnU-Net training in a sweep: `<run folder>__fold_<f>.log`."""
    return f"{run_folder(trainer, plans, configuration)}__{fold_folder(fold)}.log"


def is_pretraining_run_of(folder_name: str, method: str, configuration: str) -> bool:
    """Whether a results folder holds a pretraining run of `method` (moco does not match moco_zca) for
    `configuration`, with any length, seed, recipe and plans."""
    trainer, _, rest = folder_name.partition("__")
    return bool(rest) and rest.rsplit("__", 1)[-1] == configuration and "__" in rest and method_of(trainer) == method
