"""The target-agnostic pretrained-weights file written at the end of pretraining (`fold_all/ssl_weights.pth`).

Next to `checkpoint_final.pth`: the pretrained state keyed as in the planned U-Net (`encoder.*` for MoCo methods,
`encoder.*` and `decoder.*` without seg layers for hier / voxel2vec),
the method, the plans identity (name, dataset, configuration, architecture and its sha256), the input channels,
the run length and seed, package versions and, for moco_zca, the running whitening (mean, W = ZCA of the running
covariance; moco: per channel) per channel group, with its mode, momentum and the number of batches behind it.
Only tensors, numbers, strings, lists and dicts: loadable with `torch.load(weights_only=True)`.
`nnssl_export` turns it into a target-specific file with seg layers.
"""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nnssl_plugin.checkpoints import atomic_torch_save
from nnssl_plugin.errors import NnsslError

FORMAT = "nnssl_pretrained/1"
# the run's file in fold_all/ (not "pretrained_weights.pth": nnU-Net's `-pretrained_weights` takes exports, not this)
WEIGHTS_FILE = "ssl_weights.pth"


def refuse_older_layout(folder: str | Path) -> None:
    """One line naming the fix for a run folder of an older plugin layout, whose weights file had another name."""
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() and (folder / "pretrained_weights.pth").is_file():
        raise NnsslError(f"{folder} comes from an older nnssl_plugin layout (pretrained_weights.pth); rename that file "
                         f"to {WEIGHTS_FILE} or pretrain again")


def architecture_hash(architecture: dict) -> str:
    return hashlib.sha256(json.dumps(architecture, sort_keys=True).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("nnssl-plugin", "nnunetv2", "dynamic_network_architectures", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def write_pretrained_weights(trainer, path: str | Path) -> Path:
    """Write the file for a finished `nnsslPretrainer` run (see the module docstring)."""
    network = trainer.ssl_network
    config = trainer.configuration_manager.configuration
    whitening = None
    if network.whitening is not None:
        w = network.whitening
        whitening = {"mean": w.mean.detach().cpu().clone(), "w": w.w.detach().cpu().clone(), "groups": w.groups,
                     "eps": w.eps, "mode": w.mode, "momentum": w.momentum, "batches": int(w.step)}
    payload = {
        "format": FORMAT,
        "method": network.config.method,
        "pretrained_prefixes": list(network.pretrained_prefixes),
        "network_weights": network.pretrained_state(),
        "whitening": whitening,
        "plans": {"plans_name": trainer.plans_manager.plans_name, "dataset_name": trainer.plans_manager.dataset_name,
                  "configuration": trainer.configuration_name, "architecture": config["architecture"],
                  "architecture_sha256": architecture_hash(config["architecture"]),
                  "patch_size": list(config["patch_size"])},
        "num_input_channels": int(trainer.num_input_channels),
        "training": {"epochs": int(trainer.current_epoch), "iterations_per_epoch": trainer.num_iterations_per_epoch,
                     "batch_size": int(trainer.batch_size), "seed": trainer.seed,
                     "trainer": trainer.__class__.__name__, "recipe": trainer.recipe.to_dict(),
                     "method_options": dict(trainer.method_options),
                     "nonfinite_steps_skipped": int(trainer.nonfinite_steps)},
        "versions": package_versions(),
    }
    path = Path(path)
    atomic_torch_save(payload, path)
    return path
