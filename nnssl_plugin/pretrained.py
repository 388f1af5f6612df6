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


def plans_identity(plans_name: str, dataset_name: str, configuration_name: str, configuration: dict) -> dict:
    """The plans a run pretrained with, as the file records them: names, the configuration's architecture (and its
    sha256) and patch size."""
    return {"plans_name": plans_name, "dataset_name": dataset_name, "configuration": configuration_name,
            "architecture": configuration["architecture"],
            "architecture_sha256": architecture_hash(configuration["architecture"]),
            "patch_size": list(configuration["patch_size"])}


def pretrained_payload(network, family, plans: dict, num_input_channels: int, training: dict) -> dict:
    """The file's content (module docstring) for a pretraining network of `family` (`methods.family.Family`): its
    pretrained state, the family's prefixes and whitening; `plans` from `plans_identity`; `training`: the run's
    length, seed, trainer, recipe, method options and skipped steps, as the trainer records them."""
    return {
        "format": FORMAT,
        "method": network.config.method,
        "pretrained_prefixes": list(family.pretrained_prefixes),
        "network_weights": network.pretrained_state(),
        "whitening": family.exported_whitening(network),
        "plans": plans,
        "num_input_channels": int(num_input_channels),
        "training": training,
        "versions": package_versions(),
    }


def write_pretrained_weights(payload: dict, path: str | Path) -> Path:
    """Write `pretrained_payload(...)` to `path` atomically."""
    path = Path(path)
    atomic_torch_save(payload, path)
    return path
