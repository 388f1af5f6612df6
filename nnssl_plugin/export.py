"""The weights contract (docs/ARCHITECTURE.md, "The weights contract"): build, verify, write and read the
target-specific export.

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

from nnssl_plugin.checkpoints import atomic_torch_save, safe_load
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import atomic_write_json, load_json
from nnssl_plugin.pretrained import FORMAT as PRETRAINED_FORMAT
from nnssl_plugin.pretrained import architecture_hash, package_versions

EXPORT_FORMAT = "nnssl_export/1"
VERSION_CHECKED = ("nnunetv2", "dynamic_network_architectures", "torch")  # a difference is warned about, not refused


@dataclass
class TransferReport:
    transferred: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # 1-channel first convolutions repeated for N channels
    warnings: list[str] = field(default_factory=list)  # one line each, for the CLI to print

    def summary(self) -> str:
        adapted = f", {len(self.adapted)} adapted from 1 input channel" if self.adapted else ""
        return (f"{len(self.transferred)} tensors transferred{adapted}, {len(self.fresh)} freshly initialised, "
                f"{len(self.skipped)} skipped")


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
    report.fresh = [k for k in state if k not in report.transferred and not k.startswith("decoder.encoder.")]
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


@dataclass
class Source:
    """What an export reads: the pretrained tensors (keyed as in the planned U-Net) and their provenance."""
    method: str
    state: dict[str, torch.Tensor]
    encoder_only: bool
    architecture: dict | None  # {"network_class_name", "arch_kwargs", ...} of the pretraining plans
    num_input_channels: int | None
    provenance: dict
    whitening: dict | None = None
    warnings: list[str] = field(default_factory=list)  # one line each, for the CLI to print


def version_differences(recorded: dict) -> list[str]:
    """`<package> <recorded> (installed <installed>)` for each of VERSION_CHECKED whose recorded version differs."""
    installed = package_versions()
    return [f"{name} {recorded[name]} (installed {installed[name]})" for name in VERSION_CHECKED
            if name in recorded and str(recorded[name]) != installed[name]]


def read_source(path: str | Path) -> Source:
    """Read a pretrained-weights file, a checkpoint of ours, or a MIC-DKFZ nnssl checkpoint (safe load)."""
    payload = safe_load(path)
    if not isinstance(payload, dict):
        raise NnsslError(f"{path} holds no dict of weights")
    if payload.get("format") == PRETRAINED_FORMAT:
        differences = version_differences(payload.get("versions") or {})
        warnings = [f"{path} was written under {', '.join(differences)}; exporting anyway, the architecture check "
                    f"decides whether the weights fit (pretrain again under the installed versions if fine-tuning "
                    f"misbehaves)"] if differences else []
        return Source(payload["method"], payload["network_weights"], payload["pretrained_prefixes"] == ["encoder"],
                      payload["plans"]["architecture"], payload["num_input_channels"],
                      {"source_plans": payload["plans"], "training": payload["training"],
                       "pretraining_versions": payload["versions"]}, payload.get("whitening"), warnings)
    if "nnssl_adaptation_plan" in payload:  # MIC-DKFZ nnssl checkpoint (nnssl_format: names resolved)
        from nnssl_plugin.nnssl_format import resolve_architecture

        plan = payload["nnssl_adaptation_plan"]
        encoder_key = plan.get("key_to_encoder", "encoder.stages")
        weights = {k[len("module."):] if k.startswith("module.") else k: v
                   for k, v in payload["network_weights"].items()}
        encoder_only = not any(k.startswith("decoder.") and not k.startswith("decoder.encoder.") for k in weights)
        return Source("nnssl", weights, encoder_only, resolve_architecture(plan["architecture_plans"]),
                      plan.get("pretrain_num_input_channels"),
                      {"source": "MIC-DKFZ nnssl checkpoint", "key_to_encoder": encoder_key,
                       "nnssl_pretrain_plan": plan.get("pretrain_plan"),
                       "arch_class_name": plan["architecture_plans"].get("arch_class_name")})
    if "network_weights" in payload and "trainer_name" in payload:  # our checkpoint_latest / _final
        weights = payload["network_weights"]
        unet = {k: v for k, v in weights.items() if k.startswith("encoder.") or (
            k.startswith("decoder.") and not k.startswith(("decoder.encoder.", "decoder.seg_layers.")))}
        if not any(k.startswith("encoder.") for k in unet):
            raise NnsslError(f"{path} is an nnU-Net checkpoint without pretraining encoder weights")
        encoder_only = not any(k.startswith("decoder.") for k in unet)
        whitening = None
        if "whitening.w" in weights:
            whitening = {"mean": weights["whitening.mean"], "w": weights["whitening.w"],
                         "groups": int(weights["whitening.w"].shape[0]), "eps": None}
        plans = payload["init_args"]["plans"]
        configuration = payload["init_args"]["configuration"]
        from nnssl_plugin.plans import resolve_configuration

        arch = resolve_configuration(plans, configuration)["architecture"]
        from nnssl_plugin.trainer_names import method_of

        method = method_of(payload["trainer_name"]) or payload["trainer_name"]
        return Source(method, unet, encoder_only, arch, None,
                      {"source_checkpoint": str(path), "epochs": payload["current_epoch"],
                       "pretraining_plans": plans, "pretraining_configuration": configuration,
                       "recipe": payload.get("nnssl_recipe"),  # None: a checkpoint from before recipes
                       "method_options": payload.get("nnssl_method_options")}, whitening)
    raise NnsslError(f"{path} is neither an nnssl_plugin weights file or checkpoint nor an nnssl checkpoint "
                     f"(no nnssl_adaptation_plan)")


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
                              # what nnU-Net's nnssl-side trainer reads (nnssl_format.master_pretrain_info)
                              **master_pretrain_info(weights_path, network, pretrain_channels, pretrain_patch,
                                                     resolved["patch_size"])}
    atomic_write_json(plans_path, plans)
    return report


def pretraining_plans(source: Source) -> tuple[dict | None, str | None]:
    """The full plans and configuration a source was pretrained with, where they can be found: a checkpoint
    carries them; a weights file names them (read from nnUNet_preprocessed if still there); nnssl: None."""
    if source.provenance.get("pretraining_plans") is not None:
        return source.provenance["pretraining_plans"], source.provenance.get("pretraining_configuration")
    identity = source.provenance.get("source_plans") or {}
    if not identity.get("dataset_name") or not identity.get("plans_name"):
        return None, None
    from nnssl_plugin.paths import preprocessed_folder

    path = preprocessed_folder() / identity["dataset_name"] / f"{identity['plans_name']}.json"
    try:
        return load_json(path), identity.get("configuration")
    except (OSError, ValueError):
        return None, None


def preprocessing_differences(source_plans: dict | None, source_configuration: str | None, target_plans: dict,
                              configuration: str) -> list[str]:
    """Warnings when the target's images are preprocessed unlike the pretraining's (spacing, intensity
    normalisation): the weights still fit (same architecture) but saw other intensities or scales."""
    from nnssl_plugin.plans import resolve_configuration

    if not source_plans or source_configuration not in source_plans.get("configurations", {}):
        return []
    ours, theirs = resolve_configuration(source_plans, source_configuration), resolve_configuration(target_plans,
                                                                                                      configuration)
    out = []
    for key, what in (("spacing", "spacing"), ("normalization_schemes", "intensity normalisation")):
        if ours.get(key) != theirs.get(key):
            out.append(f"the target's {what} {theirs.get(key)} differs from the pretraining's {ours.get(key)} "
                       f"(plans '{source_plans.get('plans_name')}' of {source_plans.get('dataset_name')}); the "
                       f"weights fit, but were learnt on images preprocessed otherwise")
    return out


def weights_reference(weights_path: Path, dataset_folder: Path) -> str:
    """How `pretrain_info` names the weights: relative to the dataset's folder in nnUNet_preprocessed when the file
    lies in it (the export survives moving nnUNet_preprocessed, e.g. workstation -> cluster), absolute otherwise."""
    weights, folder = Path(weights_path).resolve(), Path(dataset_folder).resolve()
    return weights.relative_to(folder).as_posix() if weights.is_relative_to(folder) else str(weights)


def exported_weights_path(plans: dict) -> Path:
    """The weights file named by the plans' `pretrain_info`: a relative name is resolved against
    nnUNet_preprocessed/<dataset_name>; an absolute path (exports written before relative names) is kept."""
    path = Path(plans["pretrain_info"]["weights"])
    if path.is_absolute():
        return path
    from nnssl_plugin.paths import preprocessed_folder

    return preprocessed_folder() / plans["dataset_name"] / path


def load_exported_weights(plans: dict, architecture: dict, num_input_channels: int, unet: torch.nn.Module,
                          configuration: str) -> tuple[dict[str, torch.Tensor], str]:
    """Load the export named by the plans' `pretrain_info` into `unet` (checks: file, sha256, architecture, input
    channels; strict for the pretrained prefixes; the export's whitening into `bottleneck_whitening`).
    Returns the loaded pretrained tensors and a one-line report for the training log."""
    info = plans.get("pretrain_info")
    if info is None:
        raise NnsslError(f"plans '{plans['plans_name']}' has no pretrain_info; run nnssl_export -d <pretraining "
                         f"dataset> -m <method> -t {int(plans['dataset_name'][7:10])} first and train with "
                         f"-p nnsslPlans_<method>")
    path = exported_weights_path(plans)
    named_by = info.get("export_plans", plans["plans_name"])  # the export's plans, also when a run's plans carry it
    if not path.is_file():
        raise NnsslError(f"pretrained weights {path} (from plans '{named_by}') not found; rerun "
                         f"nnssl_export --overwrite")
    if sha256_of(path) != info["sha256"]:
        raise NnsslError(f"{path} does not match the sha256 recorded in plans '{named_by}' (changed or "
                         f"truncated since export); rerun nnssl_export --overwrite")
    payload = safe_load(path)
    if payload["target_plans"]["architecture_sha256"] != architecture_hash(architecture):
        raise NnsslError(f"{path} was exported for another architecture than configuration '{configuration}' of "
                         f"plans '{plans['plans_name']}'; export again for it")
    channels = payload.get("num_input_channels", payload["nnssl_adaptation_plan"]["pretrain_num_input_channels"])
    if channels != num_input_channels:
        raise NnsslError(f"{path} expects {channels} input channel(s), this dataset has {num_input_channels}")
    prefixes = payload["pretrained_prefixes"]
    state = unet.state_dict()
    pretrained = {k: v for k, v in payload["network_weights"].items() if matches_prefixes(k, prefixes)}
    missing = [k for k in state if matches_prefixes(k, prefixes) and k not in pretrained]
    if missing:
        raise NnsslError(f"{path} lacks {len(missing)} tensor(s) under {prefixes}, e.g. {missing[0]}")
    for key, value in pretrained.items():
        state[key] = value
        if key.startswith("encoder.") and "decoder." + key in state:
            state["decoder." + key] = value  # the alias wins on load
    if payload.get("whitening") is not None:
        state["bottleneck_whitening.mean"] = payload["whitening"]["mean"]
        state["bottleneck_whitening.w"] = payload["whitening"]["w"]
    unet.load_state_dict(state, strict=True)
    fresh = len([k for k in state if not matches_prefixes(k, prefixes) and not k.startswith("decoder.encoder.")])
    message = (f"loaded {path} ({payload['method']}): {len(pretrained)} pretrained tensors under {prefixes}, "
               f"{fresh} freshly initialised" + ("; bottleneck whitening applied" if payload.get("whitening") else ""))
    return {k: v.detach().cpu().clone() for k, v in pretrained.items()}, message


def verify_frozen_unchanged(unet: torch.nn.Module, loaded: dict[str, torch.Tensor]) -> int:
    """Raise unless every loaded (frozen) tensor is bit-identical in `unet`; returns how many were checked."""
    state = unet.state_dict()
    changed = [k for k, v in loaded.items() if not torch.equal(state[k].detach().cpu(), v)]
    if changed:
        raise NnsslError(f"{len(changed)} frozen tensor(s) changed during training, e.g. {changed[0]}: the probe "
                         f"was not linear on frozen features")
    return len(loaded)
