"""The weights contract (docs/ARCHITECTURE.md, "The weights contract"): build, verify and write the target-specific
export. Reading a pretraining result: `export_sources`; loading the export at training time: `export_loading`.

`export_weights` turns a pretraining result (our pretrained-weights file, a checkpoint of ours, or a MIC-DKFZ nnssl
checkpoint with an `nnssl_adaptation_plan`) into one file for a labelled target dataset: `network_weights`, a
complete state dict of the target's planned U-Net (pretrained prefixes copied, everything else freshly initialised,
so stock `nnUNetv2_train -pretrained_weights` accepts it too), plus metadata; and a copy of the target's plans,
`nnsslPlans_<method>.json`, with a `pretrain_info` block naming the file and its sha256. The pretrained prefixes
are read from the network class (`key_to_encoder`, `key_to_stem`), never hard-coded; the `decoder.encoder.*`
aliases of the encoder tensors get the same values, since they win on load.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnssl_plugin.checkpoints import atomic_torch_save
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export_sources import Source, preprocessing_differences, pretraining_plans
from nnssl_plugin.io_utils import atomic_write_json
from nnssl_plugin.pretrained import architecture_hash, package_versions

EXPORT_FORMAT = "nnssl_export/1"


@dataclass
class TransferReport:
    transferred: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # 1-channel first convolutions repeated for N channels
    warnings: list[str] = field(default_factory=list)  # one line each, for the CLI to print
    route_line: str = ""  # what nnU-Net's own nnssl route keeps of the export (`route_line`)

    def summary(self, method: str | None = None) -> str:
        adapted = f", {len(self.adapted)} adapted from 1 input channel" if self.adapted else ""
        return (f"{pretrained_count(len(self.transferred), method)}{adapted}, {len(self.fresh)} freshly initialised, "
                f"{len(self.skipped)} skipped")


def pretrained_count(count: int, method: str | None) -> str:
    """How many tensors came from the source, in the words the export and the trainers both use: the random-init
    baseline's are not called pretrained."""
    if method == "random":
        return f"{count} random-init tensors (the baseline, not pretrained)"
    return f"{count} pretrained tensors"


def fresh_keys(state_keys, loaded_keys) -> list[str]:
    """The tensors of a network that no file provided: one definition for the export's report and the trainer's log.
    `decoder.encoder.*` are aliases of `encoder.*` (the same tensors), never counted twice."""
    loaded = set(loaded_keys)
    return [k for k in state_keys if k not in loaded and not k.startswith("decoder.encoder.")]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_planned_network(plans: dict, configuration: str, num_input_channels: int, dataset_json: dict
                          ) -> torch.nn.Module:
    """The target's planned network, exactly as nnU-Net's trainer builds it (deep supervision off)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    heads = pm.get_label_manager(dataset_json).num_segmentation_heads
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, num_input_channels, heads,
                                  allow_init=True, deep_supervision=False)


def pretrained_prefixes(network: torch.nn.Module, encoder_only: bool) -> list[str]:
    """State-dict prefixes that pretraining provides, from the class's own declarations."""
    declared = [getattr(network, "key_to_encoder", None), getattr(network, "key_to_stem", None)]
    prefixes = [p for p in declared if p]
    if not prefixes:
        raise NnsslError(f"{type(network).__name__} declares no key_to_encoder; only dynamic-network-architectures "
                         f"U-Nets are supported")
    prefixes = [p for p in prefixes if not any(p != q and p.startswith(q + ".") for q in prefixes)]
    if not encoder_only:  # the decoder's own modules: not its encoder alias, not the seg layers (sized per dataset)
        prefixes += [f"decoder.{name}" for name, _ in network.decoder.named_children()
                     if name not in ("encoder", "seg_layers")]
    return sorted(set(prefixes))


def matches_prefixes(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def transfer(target_state: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor], prefixes: list[str],
             in_proj: tuple[str, ...] | list[str] = ()) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """Copy the pretrained tensors under `prefixes` into a copy of `target_state`; `decoder.encoder.*` aliases get
    the encoder's values. A 1-channel first convolution (`in_proj`: its keys) meeting an N-channel target is adapted
    (`nnssl_format.adapt_input_channels`). Other shape mismatches name both shapes."""
    from nnssl_plugin.nnssl_format import adapt_input_channels

    state = dict(target_state)
    report = TransferReport()
    for key, value in pretrained.items():
        if key.startswith("decoder.encoder."):
            continue  # alias, filled from encoder.* below
        if not matches_prefixes(key, prefixes) or key not in state:
            report.skipped.append(key)
            continue
        if key.endswith(".weight") and key[:-len(".weight")] in in_proj and value.dim() > 2 and value.shape[1] == 1 and state[key].shape[1] > 1 and \
                tuple(value.shape[2:]) == tuple(state[key].shape[2:]) and value.shape[0] == state[key].shape[0]:
            value = adapt_input_channels(value, state[key].shape[1])
            report.adapted.append(key)
        if tuple(value.shape) != tuple(state[key].shape):
            raise NnsslError(f"pretrained tensor {key} has shape {tuple(value.shape)} but the target network needs "
                             f"{tuple(state[key].shape)}; the pretraining and target architectures differ")
        state[key] = value.to(state[key].dtype).clone()
        report.transferred.append(key)
        alias = "decoder." + key
        if key.startswith("encoder.") and alias in state:
            state[alias] = state[key]
    missing = [k for k in state if matches_prefixes(k, prefixes) and k not in pretrained and
               not (k.startswith("decoder.encoder.") and k[len("decoder."):] in pretrained)]
    if missing:
        raise NnsslError(f"the pretrained weights lack {len(missing)} tensor(s) the target's {prefixes} need, e.g. "
                         f"{missing[0]}; the pretraining and target architectures differ")
    report.fresh = fresh_keys(state, report.transferred)
    return state, report


def first_architecture_difference(a: dict, b: dict, path: str = "") -> str | None:
    """The first differing field of two architecture blocks, as a dotted path, or None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key.startswith("_"):
                continue
            if key not in a or key not in b:
                return f"{path}{key}"
            diff = first_architecture_difference(a[key], b[key], f"{path}{key}.")
            if diff:
                return diff
        return None
    return None if a == b else path.rstrip(".")


def check_architecture(source: Source, target_arch: dict, target_channels: int) -> None:
    """The pretraining architecture must be the target's (class-valued kwargs compared by the class they name);
    input channels equal, or a 1-channel pretraining for an N-channel target (adapted in `transfer`)."""
    from nnssl_plugin.nnssl_format import canonical_architecture

    if source.architecture is not None:
        ours, theirs = canonical_architecture(source.architecture), canonical_architecture(target_arch)
        diff = first_architecture_difference(ours, theirs)
        if diff is not None:
            raise NnsslError(f"the target's architecture differs from the pretraining one at '{diff}'; export to a "
                             f"target whose plans share the pretraining architecture (pretrain on the target's "
                             f"plans with nnssl_prepare -t)")
    if source.num_input_channels not in (None, 1, target_channels):
        raise NnsslError(f"the pretrained network has {source.num_input_channels} input channel(s), the target "
                         f"{target_channels}; pretrain on images with the target's channels (a 1-channel "
                         f"pretraining adapts to any number)")


def export_weights(source: Source, target_plans: dict, configuration: str, dataset_json: dict,
                   weights_path: Path, plans_path: Path, plans_name: str, source_dataset: str) -> TransferReport:
    """Build, verify and write the export (weights file, then plans). Both written atomically."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnssl_plugin.nnssl_format import in_proj_keys, master_pretrain_info, short_class_name
    from nnssl_plugin.nnssl_format import pretrain_plan as nnssl_pretrain_plan
    from nnssl_plugin.plans import resolve_configuration

    pm = PlansManager(target_plans)
    cm = pm.get_configuration(configuration)
    channels = determine_num_input_channels(pm, cm, dataset_json)
    resolved = resolve_configuration(target_plans, configuration)
    check_architecture(source, resolved["architecture"], channels)
    network = build_planned_network(target_plans, configuration, channels, dataset_json)
    prefixes = pretrained_prefixes(network, source.encoder_only)
    state, report = transfer(network.state_dict(), source.state, prefixes, in_proj_keys(network))
    verify = build_planned_network(target_plans, configuration, channels, dataset_json)
    verify.load_state_dict(state, strict=True)
    loaded = verify.state_dict()
    for key in report.transferred:  # the strict load kept every pretrained tensor (aliases agree)
        if not torch.equal(loaded[key], state[key]):
            raise NnsslError(f"verification failed: {key} did not survive a strict load")
    pretrain_channels = source.num_input_channels or channels
    source_plans, source_configuration = pretraining_plans(source)
    report.warnings += preprocessing_differences(source_plans, source_configuration, target_plans, configuration)
    pretrain_patch = (resolve_configuration(source_plans, source_configuration)["patch_size"]
                      if source_plans and source_configuration in source_plans.get("configurations", {}) else None)
    adaptation_plan = {  # MIC-DKFZ nnssl's nnssl_adaptation_plan (nnssl_format): what nnssl and nnU-Net read
        "architecture_plans": {"arch_class_name": short_class_name(resolved["architecture"]["network_class_name"]),
                               "arch_kwargs": resolved["architecture"]["arch_kwargs"],
                               # as nnssl lists them: the class-valued kwargs that are set (not dropout_op=None)
                               "arch_kwargs_requiring_import": [
                                   k for k in resolved["architecture"].get("_kw_requires_import") or ()
                                   if resolved["architecture"]["arch_kwargs"].get(k) is not None]},
        "pretrain_plan": (source.provenance.get("nnssl_pretrain_plan") or
                          nnssl_pretrain_plan(source_plans, source_configuration) or
                          nnssl_pretrain_plan(target_plans, configuration)),
        "pretrain_num_input_channels": pretrain_channels,
        "recommended_downstream_patchsize": [int(p) for p in resolved["patch_size"]],
        "key_to_encoder": getattr(network, "key_to_encoder", None),
        "key_to_stem": getattr(network, "key_to_stem", None),
        "keys_to_in_proj": in_proj_keys(network),
        "key_to_lpe": None,
    }
    route = nnunet_route_keeps(prefixes, adaptation_plan["key_to_encoder"], adaptation_plan["key_to_stem"],
                               source.whitening is not None, configuration)
    report.route_line = route_line(route)
    payload = {
        "format": EXPORT_FORMAT,
        "network_weights": {k: v.detach().cpu() for k, v in state.items()},
        "method": source.method,
        "pretrained_prefixes": prefixes,
        "source_dataset": source_dataset,
        "target_plans": {"plans_name": plans_name, "configuration": configuration,
                         "architecture_sha256": architecture_hash(resolved["architecture"])},
        "provenance": source.provenance,
        "whitening": source.whitening,
        "versions": package_versions(),
        "nnssl_adaptation_plan": adaptation_plan,
        "num_input_channels": channels,  # what the weights take (pretrain_num_input_channels: what pretraining saw)
        "adapted_input_channels": report.adapted,
        "nnunet_nnssl_route": route,
    }
    atomic_torch_save(payload, weights_path)
    plans = copy.deepcopy(target_plans)
    plans["plans_name"] = plans_name
    plans["pretrain_info"] = {"weights": weights_reference(weights_path, plans_path.parent),
                              "sha256": sha256_of(weights_path),
                              "method": source.method, "pretrained_prefixes": prefixes,
                              "configuration": configuration, "source_dataset": source_dataset,
                              "whitening": source.whitening is not None,
                              "whitening_shape": (list(source.whitening["w"].shape[:2]) if source.whitening
                                                  else None),
                              "architecture_sha256": architecture_hash(resolved["architecture"]),
                              "nnunet_nnssl_route": route,
                              # what nnU-Net's nnssl-side trainer reads (nnssl_format.master_pretrain_info)
                              **master_pretrain_info(weights_path, network, pretrain_channels, pretrain_patch,
                                                     resolved["patch_size"])}
    atomic_write_json(plans_path, plans)
    return report


def nnunet_route_keeps(prefixes: list[str], key_to_encoder: str | None, key_to_stem: str | None,
                       whitening: bool, configuration: str) -> dict:
    """What nnU-Net's own nnssl route (nnU-Net master after 2.8.1: `nnUNetv2_plan_like_dynamic` /
    `nnUNetv2_preprocess_like_nnssl`, then `nnUNetv2_train_pretrained` with `PretrainedTrainer` /
    `DynamicPretrainedTrainer`) keeps of this export: its trainers load the tensors under `key_to_encoder` and
    `key_to_stem` only (everything else of the network is initialised afresh), they know nothing of a `moco_zca`
    whitening, and its planners write one configuration, `3d_fullres`. Measured end to end in
    tests/downstream/test_nnunet_nnssl_route.py; docs/NNSSL_ROUTE.md."""
    loaded = [p for p in (key_to_encoder, key_to_stem) if p]
    dropped = [p for p in prefixes if not matches_prefixes(p, loaded)]
    return {"loads": sorted(p for p in prefixes if matches_prefixes(p, loaded)),
            "drops": dropped + (["whitening"] if whitening else []),
            "planned_configurations": ["3d_fullres"],
            "configuration_reachable_by_its_planners": configuration == "3d_fullres"}


def route_line(route: dict) -> str:
    """The export command's one line on nnU-Net's own nnssl route (`nnunet_route_keeps`)."""
    drops = [("moco_zca's whitening" if d == "whitening" else d) for d in route["drops"]]
    line = (f"nnU-Net's own nnssl route (nnUNetv2_train_pretrained) loads {', '.join(route['loads'])}"
            + (f" and drops {', '.join(drops)}" if drops else ""))
    if not route["configuration_reachable_by_its_planners"]:
        line += "; its planners write 3d_fullres only (use this export's plans directly with -p)"
    return line + " (docs/NNSSL_ROUTE.md)"


def weights_reference(weights_path: Path, dataset_folder: Path) -> str:
    """How `pretrain_info` names the weights: relative to the dataset's folder in nnUNet_preprocessed when the file
    lies in it (the export survives moving nnUNet_preprocessed, e.g. workstation -> cluster), absolute otherwise."""
    weights, folder = Path(weights_path).resolve(), Path(dataset_folder).resolve()
    return weights.relative_to(folder).as_posix() if weights.is_relative_to(folder) else str(weights)
