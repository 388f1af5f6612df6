"""nnU-Net plans: loading with clear errors, the small CPU configuration, and copying plans to another dataset."""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

from nnssl_plugin.errors import BadArgument, NnsslError
from nnssl_plugin.io_utils import load_json
from nnssl_plugin.paths import preprocessed_folder


PLANS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_plans_name(name: str, flag: str = "--plans-name") -> str:
    """A plans name is a file name in the dataset's folder (`<name>.json`, `<name>_weights.pth`): no '/' or other
    path parts, which would write elsewhere or fail late."""
    if not PLANS_NAME.match(name):
        raise NnsslError(f"{flag} {name!r} is not a plans name: it becomes the file {name}.json next to the dataset's "
                         f"plans; use letters, digits, '_', '-' and '.' only (e.g. nnsslPlans_mine)")
    return name


def plans_path(dataset_name: str, plans_name: str) -> Path:
    return preprocessed_folder() / dataset_name / f"{plans_name}.json"


def load_plans(dataset_name: str, plans_name: str, plan_hint: str | None = None) -> dict:
    """Load nnUNet_preprocessed/<dataset>/<plans_name>.json; `plan_hint` is the command that would create it."""
    path = plans_path(dataset_name, plans_name)
    if not path.is_file():
        dataset_id = int(dataset_name[7:10])
        hint = plan_hint or f"nnUNetv2_plan_and_preprocess -d {dataset_id}"
        raise NnsslError(f"{dataset_name} has no plans '{plans_name}' ({path} not found); run {hint} first")
    return load_json(path)


def resolve_configuration(plans: dict, configuration: str) -> dict:
    """The configuration dict with `inherits_from` resolved (nnU-Net's shallow update, parent first)."""
    configurations = plans.get("configurations", {})
    if configuration not in configurations:
        raise NnsslError(f"configuration '{configuration}' is not in plans '{plans.get('plans_name')}' "
                         f"(available: {', '.join(configurations)}); choose one of these")
    own = copy.deepcopy(configurations[configuration])
    parent = own.pop("inherits_from", None)
    if parent is None:
        return own
    resolved = resolve_configuration(plans, parent)
    resolved.update(own)
    return resolved


def cumulative_strides(configuration: dict) -> list[int]:
    """Per-axis product of all stage strides: the factor between the input and the bottleneck grid (a stride given
    as one int applies to every axis)."""
    dims = len(configuration["patch_size"])
    total = [1] * dims
    for stride in configuration["architecture"]["arch_kwargs"]["strides"]:
        total = [t * s for t, s in zip(total, [stride] * dims if isinstance(stride, int) else stride)]
    return total


def add_cpu_configuration(plans: dict, parent: str = "3d_fullres", name: str = "3d_cpu",
                          feature_divisor: int = 4, patch_scale: float = 0.5,
                          patch_size: list[int] | None = None, batch_size: int | None = None) -> dict:
    """Return a copy of `plans` with configuration `name` that inherits from `parent` (so it reuses the same
    preprocessed data) with `feature_divisor`× fewer features per stage and a smaller patch.

    The patch is `patch_size` if given, else the parent's scaled by `patch_scale`; every axis must be a multiple of
    the network's cumulative stride on that axis (rounded down to one, never below one stride).
    """
    base = resolve_configuration(plans, parent)
    if name == parent:
        raise BadArgument("name", f"must differ from the parent configuration '{parent}'")
    if feature_divisor < 1:
        raise BadArgument("feature_divisor", f"must be at least 1, got {feature_divisor}")
    architecture = copy.deepcopy(base["architecture"])
    kwargs = architecture["arch_kwargs"]
    kwargs["features_per_stage"] = [max(2, int(math.ceil(f / feature_divisor))) for f in kwargs["features_per_stage"]]
    strides = cumulative_strides(base)
    if patch_size is None:
        patch_size = [max(s, int(p * patch_scale) // s * s) for p, s in zip(base["patch_size"], strides)]
    else:
        if len(patch_size) != len(strides):
            raise BadArgument("patch_size", f"needs {len(strides)} values for '{parent}', got {len(patch_size)}")
        bad = [(p, s) for p, s in zip(patch_size, strides) if p < s or p % s]
        if bad:
            raise BadArgument("patch_size", f"{patch_size} does not fit the network: each axis must be a positive "
                                            f"multiple of the cumulative stride {strides}")
    new = {"inherits_from": parent, "patch_size": [int(p) for p in patch_size], "architecture": architecture}
    if batch_size is not None:
        if batch_size < 1:
            raise BadArgument("batch_size", f"must be at least 1, got {batch_size}")
        new["batch_size"] = int(batch_size)
    out = copy.deepcopy(plans)
    out["configurations"][name] = new
    return out


def plans_for_dataset(plans: dict, dataset_name: str, plans_name: str) -> dict:
    """Copy plans to another dataset the way nnUNetv2_move_plans_between_datasets does: new dataset_name and
    plans_name, and every data_identifier re-prefixed with the new plans name."""
    out = copy.deepcopy(plans)
    old_name = plans["plans_name"]
    out["dataset_name"] = dataset_name
    out["plans_name"] = plans_name
    for configuration in out["configurations"].values():
        identifier = configuration.get("data_identifier")
        if identifier is None:
            continue
        if identifier.startswith(old_name):
            configuration["data_identifier"] = plans_name + identifier[len(old_name):]
        else:
            configuration["data_identifier"] = f"{plans_name}_{identifier}"
    return out
