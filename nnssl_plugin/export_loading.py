"""The export at training time (docs/ARCHITECTURE.md, "The weights contract"): find the weights file the plans'
`pretrain_info` names, verify it (file, sha256, architecture, input channels) and load it into the planned U-Net;
after a frozen evaluation, check the frozen tensors did not move."""
from __future__ import annotations

from pathlib import Path

import torch

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export import fresh_keys, matches_prefixes, pretrained_count, sha256_of
from nnssl_plugin.pretrained import architecture_hash
from nnssl_plugin.weights_size import refuse_oversized


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
    refuse_oversized(path, unet, named_by)  # before hashing: a huge file is not read at all
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
    whitening = ["bottleneck_whitening.mean", "bottleneck_whitening.w"] if payload.get("whitening") is not None else []
    fresh = len(fresh_keys(state, [*pretrained, *whitening]))  # the export's report counts the same way
    message = (f"loaded {path} ({payload['method']}): {pretrained_count(len(pretrained), payload['method'])} under "
               f"{prefixes}, {fresh} freshly initialised" + ("; bottleneck whitening applied" if whitening else ""))
    return {k: v.detach().cpu().clone() for k, v in pretrained.items()}, message


def verify_frozen_unchanged(unet: torch.nn.Module, loaded: dict[str, torch.Tensor]) -> int:
    """Raise unless every loaded (frozen) tensor is bit-identical in `unet`; returns how many were checked."""
    state = unet.state_dict()
    changed = [k for k, v in loaded.items() if not torch.equal(state[k].detach().cpu(), v)]
    if changed:
        raise NnsslError(f"{len(changed)} frozen tensor(s) changed during training, e.g. {changed[0]}: the probe "
                         f"was not linear on frozen features")
    return len(loaded)
