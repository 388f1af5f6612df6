"""What an export reads (docs/ARCHITECTURE.md, "The weights contract"): a pretraining result as a `Source` (the
pretrained tensors keyed as in the planned U-Net, the architecture, the input channels, the provenance), one reader
per format: our pretrained-weights file (`ssl_weights.pth`), a checkpoint of ours, a MIC-DKFZ nnssl checkpoint
(`nnssl_format`); and what can be said of the pretraining's preprocessing against a target's."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import load_json
from nnssl_plugin.pretrained import FORMAT as PRETRAINED_FORMAT
from nnssl_plugin.pretrained import package_versions

VERSION_CHECKED = ("nnunetv2", "dynamic_network_architectures", "torch")  # a difference is warned about, not refused


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
    """Read a pretrained-weights file, a checkpoint of ours, or a MIC-DKFZ nnssl checkpoint (safe load): one reader
    per format, chosen by what the file holds."""
    payload = safe_load(path)
    if not isinstance(payload, dict):
        raise NnsslError(f"{path} holds no dict of weights")
    if payload.get("format") == PRETRAINED_FORMAT:
        return _read_pretrained_file(path, payload)
    if "nnssl_adaptation_plan" in payload:  # MIC-DKFZ nnssl checkpoint, or an export of ours (which carries one)
        return _read_nnssl_checkpoint(payload)
    if "network_weights" in payload and "trainer_name" in payload:  # our checkpoint_latest / _final
        return _read_own_checkpoint(path, payload)
    raise NnsslError(f"{path} is neither an nnssl_plugin weights file or checkpoint nor an nnssl checkpoint "
                     f"(no nnssl_adaptation_plan)")


def _read_pretrained_file(path, payload: dict) -> Source:
    differences = version_differences(payload.get("versions") or {})
    warnings = [f"{path} was written under {', '.join(differences)}; exporting anyway, the architecture check "
                f"decides whether the weights fit (pretrain again under the installed versions if fine-tuning "
                f"misbehaves)"] if differences else []
    return Source(method=payload["method"], state=payload["network_weights"],
                  encoder_only=payload["pretrained_prefixes"] == ["encoder"],
                  architecture=payload["plans"]["architecture"], num_input_channels=payload["num_input_channels"],
                  provenance={"source_plans": payload["plans"], "training": payload["training"],
                              "pretraining_versions": payload["versions"]},
                  whitening=payload.get("whitening"), warnings=warnings)


def _read_nnssl_checkpoint(payload: dict) -> Source:
    """nnssl's layout (`nnssl_format`): architecture names resolved, a DataParallel `module.` prefix dropped."""
    from nnssl_plugin.nnssl_format import resolve_architecture

    plan = payload["nnssl_adaptation_plan"]
    weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in payload["network_weights"].items()}
    return Source(method="nnssl", state=weights,
                  encoder_only=not any(k.startswith("decoder.") and not k.startswith("decoder.encoder.")
                                       for k in weights),
                  architecture=resolve_architecture(plan["architecture_plans"]),
                  num_input_channels=plan.get("pretrain_num_input_channels"),
                  provenance={"source": "MIC-DKFZ nnssl checkpoint",
                              "key_to_encoder": plan.get("key_to_encoder", "encoder.stages"),
                              "nnssl_pretrain_plan": plan.get("pretrain_plan"),
                              "arch_class_name": plan["architecture_plans"].get("arch_class_name")})


def _read_own_checkpoint(path, payload: dict) -> Source:
    """The pretrained tensors of a checkpoint of ours: the U-Net's encoder (and decoder, seg layers excluded) and the
    whitening its method's family names (`Family.whitening_in_state`)."""
    from nnssl_plugin.families import family_of_method
    from nnssl_plugin.plans import resolve_configuration
    from nnssl_plugin.trainer_names import method_of

    weights = payload["network_weights"]
    unet = {k: v for k, v in weights.items() if k.startswith("encoder.") or (
        k.startswith("decoder.") and not k.startswith(("decoder.encoder.", "decoder.seg_layers.")))}
    if not any(k.startswith("encoder.") for k in unet):
        raise NnsslError(f"{path} is an nnU-Net checkpoint without pretraining encoder weights")
    method = method_of(payload["trainer_name"])
    family = family_of_method(method) if method else None
    plans, configuration = payload["init_args"]["plans"], payload["init_args"]["configuration"]
    return Source(method=method or payload["trainer_name"], state=unet,
                  encoder_only=(family.pretrained_prefixes == ("encoder",) if family else
                                not any(k.startswith("decoder.") for k in unet)),
                  architecture=resolve_configuration(plans, configuration)["architecture"], num_input_channels=None,
                  provenance={"source_checkpoint": str(path), "epochs": payload["current_epoch"],
                              "pretraining_plans": plans, "pretraining_configuration": configuration,
                              "recipe": payload.get("nnssl_recipe"),  # None: a checkpoint from before recipes
                              "method_options": payload.get("nnssl_method_options")},
                  whitening=family.whitening_in_state(weights) if family else None)


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
