"""What `nnssl_probe` probes: the frozen planned U-Net of a pretraining run, a weights file, an export, or a random
initialisation, loaded as the downstream trainers load it, and the level set to read.

- an export's plans name (`nnsslPlans_hier`): exactly `nnUNetTrainerSSLLinear`'s network: the planned U-Net, the
  plans' bottleneck whitening attached (`attach_exported_whitening`), the export loaded by `load_exported_weights`
  (file, sha256, architecture and channel checks);
- a run folder (its `ssl_weights.pth`, else `checkpoint_final.pth`, else `checkpoint_latest.pth`), a
  pretrained-weights file, a checkpoint of ours, an export's weights file or a MIC-DKFZ nnssl checkpoint: read as
  `nnssl_export` reads it (`read_source`, `check_architecture`, `transfer` under the prefixes the network class
  declares), moco_zca's running whitening attached as the export would carry it;
- `random`: the planned U-Net freshly initialised with the seed.
The level set is the source's own (`level_set_for` its pretrained prefixes, as the Linear trainer decides), or the
one of `levels_like` (a method name or a level set): random init has none of its own and must be given one, the
level set of the method it is compared with (hier vs random reads decoder levels on both sides).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.families import level_set_of_method
from nnssl_plugin.modules.probe_levels import LEVEL_SETS, attach_exported_whitening, level_set_for
from nnssl_plugin.modules.whitening import attach_bottleneck_whitening

from nnssl_plugin.pretrained import WEIGHTS_FILE, refuse_older_layout

RUN_FILES = (WEIGHTS_FILE, "checkpoint_final.pth", "checkpoint_latest.pth")  # in this order
RANDOM = "random"


@dataclass
class FrozenSource:
    unet: nn.Module  # the planned U-Net (deep supervision off), weights loaded, whitening attached if any
    levels: str  # the level set read
    own_levels: str | None  # the source's own level set (None: random init)
    method: str  # moco, moco_zca, hier, voxel2vec, nnssl, random
    description: str  # one line: what was loaded
    file: Path | None  # the weights file read (None: random init)
    whitened: bool


def levels_of(levels_like: str) -> str:
    """A level set from `--levels-like`: 'encoder', 'decoder' or a method name."""
    if levels_like in LEVEL_SETS:
        return levels_like
    try:
        return level_set_of_method(levels_like)
    except KeyError:
        from nnssl_plugin.config import METHODS

        raise NnsslError(f"--levels-like {levels_like!r} is neither a method ({', '.join(METHODS)}) nor a level set "
                         f"({', '.join(LEVEL_SETS)}); pass the method the probe is compared with") from None


def run_file(folder: Path) -> Path:
    """The weights file of a run folder (or of its fold_all)."""
    for base in (folder, folder / "fold_all"):
        refuse_older_layout(base)
        for name in RUN_FILES:
            if (base / name).is_file():
                return base / name
    raise NnsslError(f"{folder} holds none of {', '.join(RUN_FILES)}; pass a run folder of nnssl_pretrain, a weights "
                     f"file, an export's plans name or 'random'")


def load_frozen_source(text: str, target_folder: Path, plans: dict, configuration: str, dataset_json: dict,
                       num_input_channels: int, levels_like: str | None = None, seed: int = 0) -> FrozenSource:
    """Resolve SOURCE (module docstring) for the target's `plans` and `configuration`."""
    from nnssl_plugin.export import build_planned_network

    wanted = levels_of(levels_like) if levels_like else None
    torch.manual_seed(seed)  # every freshly initialised part (random init, untransferred modules) is seeded
    if text == RANDOM:
        if wanted is None:
            raise NnsslError("random init has no level set of its own; pass --levels-like <method> with the method it "
                             "is compared with (e.g. --levels-like hier reads decoder levels, --levels-like moco "
                             "encoder stages)")
        unet = build_planned_network(plans, configuration, num_input_channels, dataset_json)
        return FrozenSource(unet, wanted, None, RANDOM, f"random init (seed {seed})", None, False)
    path = Path(text)
    if path.is_dir():
        path = run_file(path)
    if path.is_file():
        return _from_file(path, plans, configuration, dataset_json, num_input_channels, wanted)
    if "/" not in text and (target_folder / f"{text}.json").is_file():
        return _from_export_plans(text, target_folder, plans, configuration, dataset_json, num_input_channels, wanted)
    raise NnsslError(f"source {text!r} is not a file, a run folder or the name of plans in {target_folder}; pass a run "
                     f"folder of nnssl_pretrain, a weights file, an export's plans name (nnssl_export) or 'random'")


def _from_export_plans(name: str, target_folder: Path, plans: dict, configuration: str, dataset_json: dict,
                       channels: int, wanted: str | None) -> FrozenSource:
    from nnssl_plugin.export import build_planned_network, first_architecture_difference
    from nnssl_plugin.export_loading import exported_weights_path, load_exported_weights
    from nnssl_plugin.io_utils import load_json
    from nnssl_plugin.plans import resolve_configuration

    export_plans = load_json(target_folder / f"{name}.json")
    info = export_plans.get("pretrain_info")
    if info is None:
        raise NnsslError(f"plans '{name}' have no pretrain_info, so they name no pretrained weights; pass an export's "
                         f"plans name (nnssl_export writes nnsslPlans_<method>), a run folder or 'random'")
    architecture = resolve_configuration(export_plans, configuration)["architecture"]
    difference = first_architecture_difference(architecture,
                                               resolve_configuration(plans, configuration)["architecture"])
    if difference is not None:
        raise NnsslError(f"export '{name}' was made for another architecture than plans '{plans['plans_name']}' "
                         f"(configuration '{configuration}' differs at '{difference}'); pass -p with the plans it "
                         f"was exported for")
    unet = attach_exported_whitening(build_planned_network(export_plans, configuration, channels, dataset_json), info)
    _, message = load_exported_weights(export_plans, architecture, channels, unet, configuration)
    own = level_set_for(info["pretrained_prefixes"])
    return FrozenSource(unet, wanted or own, own, info["method"], f"export '{name}': {message}",
                        exported_weights_path(export_plans), bool(info.get("whitening")))


def _source_of_file(path: Path):
    """`read_source`, plus nnssl_export's own files (their pretrained prefixes and whitening)."""
    from nnssl_plugin.checkpoints import safe_load
    from nnssl_plugin.export import EXPORT_FORMAT
    from nnssl_plugin.export_sources import Source, read_source

    payload = safe_load(path)
    if isinstance(payload, dict) and payload.get("format") == EXPORT_FORMAT:
        prefixes = payload["pretrained_prefixes"]
        channels = payload.get("num_input_channels", payload["nnssl_adaptation_plan"]["pretrain_num_input_channels"])
        return Source(method=payload["method"], state=payload["network_weights"],
                      encoder_only=level_set_for(prefixes) == "encoder", architecture=None,
                      num_input_channels=channels, provenance={"export": str(path)},
                      whitening=payload.get("whitening")), payload["target_plans"]["architecture_sha256"]
    return read_source(path), None


def _from_file(path: Path, plans: dict, configuration: str, dataset_json: dict, channels: int,
               wanted: str | None) -> FrozenSource:
    from nnssl_plugin.export import build_planned_network, check_architecture, pretrained_prefixes, transfer
    from nnssl_plugin.plans import resolve_configuration
    from nnssl_plugin.pretrained import architecture_hash

    source, export_sha = _source_of_file(path)
    architecture = resolve_configuration(plans, configuration)["architecture"]
    if export_sha is not None and export_sha != architecture_hash(architecture):
        raise NnsslError(f"{path} was exported for another architecture than configuration '{configuration}' of "
                         f"plans '{plans['plans_name']}'; pass the -c and -p it was exported for")
    check_architecture(source, architecture, channels)
    unet = build_planned_network(plans, configuration, channels, dataset_json)
    prefixes = pretrained_prefixes(unet, source.encoder_only)
    state, report = transfer(unet.state_dict(), source.state, prefixes)
    unet.load_state_dict(state, strict=True)
    whitened = source.whitening is not None
    if whitened:
        w = source.whitening
        attach_bottleneck_whitening(unet, int(w["w"].shape[0]), int(w["w"].shape[1]))
        unet.bottleneck_whitening.load_state_dict({"mean": w["mean"], "w": w["w"]})
    own = level_set_for(prefixes)
    description = (f"{path} ({source.method}): {report.summary()}" + ("; bottleneck whitening applied" if whitened
                                                                       else ""))
    return FrozenSource(unet, wanted or own, own, source.method, description, path, whitened)
