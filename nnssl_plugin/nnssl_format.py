"""MIC-DKFZ nnssl's checkpoint format, read and written (re-implemented from its source; nothing copied).

Read at these commits (github.com/MIC-DKFZ/nnssl and, for the nnssl-side code of nnU-Net, github.com/MIC-DKFZ/nnUNet):
- the checkpoint and its `nnssl_adaptation_plan`: nnssl 19b10663833855d1999846f1ea4b6a69306d4f27
  (`src/nnssl/training/nnsslTrainer/AbstractTrainer.py`); the plan's fields as nnssl's trainers at
  419a75b7b56338e5ee0672fb5ead9b8c09817c39 pass them (`keys_to_in_proj`, `key_to_lpe` included);
- the architecture names: nnssl 1ec1701ebb2b765e85ea2d2ae8fa32d8a83eaa91 (`src/nnssl/architectures/
  get_network_by_name.py`) and the ResEncL preset at 03f2cb88bfbbefea2956a138d2e2ada70c87999a
  (`src/nnssl/architectures/architecture_registry.py`), identical in nnU-Net 887c02ee78088455497b47b4d0348598fc18f231
  (`nnunetv2/utilities/get_network_via_name.py`);
- what nnU-Net's nnssl side reads (`nnunetv2/experiment_planning/like_nnssl.py`, the pretrained trainers): nnU-Net
  887c02ee78088455497b47b4d0348598fc18f231 and 27f878d7a2d0fe9b7752985cd8521fce89b7fc39.

`arch_class_name` is a preset ("ResEncL": dynamic-network-architectures' ResidualEncoderUNet with fixed kwargs, the
kwargs not written), a short class name ("ResidualEncoderUNet", "PlainConvUNet": kwargs written, the classes and
norm/nonlin as dotted strings) or a dotted class name. `resolve_architecture` turns each into the block nnU-Net's
plans hold (`network_class_name`, `arch_kwargs`, `_kw_requires_import`), so the export's architecture check compares
like with like. Not U-Nets nnU-Net's plans describe (Primus, NoSkipResEncL): refused in one line.
"""
from __future__ import annotations

import copy

import torch

from nnssl_plugin.errors import NnsslError

UNET_MODULE = "dynamic_network_architectures.architectures.unet"
SHORT_NAMES = ("ResidualEncoderUNet", "PlainConvUNet")
NOT_PLANNABLE = ("NoSkipResEncL", "PrimusS", "PrimusB", "PrimusM", "PrimusL")
REQUIRING_IMPORT = ["conv_op", "norm_op", "nonlin"]
# nnssl's "ResEncL" in nnU-Net's plans form
RESENC_L = {
    "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
}


def resolve_architecture(architecture_plans: dict) -> dict:
    """nnssl's `architecture_plans` as nnU-Net's plans' architecture block."""
    name = architecture_plans.get("arch_class_name")
    if name == "ResEncL":
        return {"network_class_name": f"{UNET_MODULE}.ResidualEncoderUNet", "arch_kwargs": copy.deepcopy(RESENC_L),
                "_kw_requires_import": list(REQUIRING_IMPORT)}
    if name in NOT_PLANNABLE:
        raise NnsslError(f"the nnssl checkpoint's architecture '{name}' is not a U-Net nnU-Net's plans describe; "
                         f"only ResEncL, ResidualEncoderUNet and PlainConvUNet checkpoints can be exported")
    if not isinstance(name, str) or not name:
        raise NnsslError("the nnssl checkpoint's nnssl_adaptation_plan names no arch_class_name")
    if name in SHORT_NAMES:
        name = f"{UNET_MODULE}.{name}"
    kwargs = architecture_plans.get("arch_kwargs")
    if kwargs is None:
        raise NnsslError(f"the nnssl checkpoint's architecture '{name}' comes without arch_kwargs and is no preset "
                         f"this plugin knows (ResEncL)")
    return {"network_class_name": name, "arch_kwargs": kwargs,
            "_kw_requires_import": list(architecture_plans.get("arch_kwargs_requiring_import") or REQUIRING_IMPORT)}


def short_class_name(network_class_name: str) -> str:
    """What nnssl writes as arch_class_name: the short name for dynamic-network-architectures' U-Nets."""
    module, _, cls = network_class_name.rpartition(".")
    return cls if module == UNET_MODULE and cls in SHORT_NAMES else network_class_name


def in_proj_keys(network: torch.nn.Module) -> list[str]:
    """The network's first-convolution keys (`keys_to_in_proj`, both aliases), the `.conv` one first, as nnU-Net's
    loader expects."""
    keys = list(getattr(network, "keys_to_in_proj", ()) or ())
    return sorted(keys, key=lambda k: not k.endswith(".conv"))


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A 1-channel first-convolution weight (out, 1, *k) for `channels` inputs: repeated along the input axis and
    divided by `channels`, so an image repeated over the channels gives the pretrained response (as nnssl's
    fine-tuning side adapts it)."""
    if weight.shape[1] != 1:
        raise NnsslError(f"only a 1-channel pretraining adapts to {channels} channels; the weights have "
                         f"{weight.shape[1]}")
    return weight.repeat(1, channels, *([1] * (weight.dim() - 2))) / channels


def pretrain_plan(plans: dict | None, configuration: str | None) -> dict | None:
    """The pretraining plans in the shape of nnssl's serialised Plan: the one configuration used, with the fields
    nnU-Net's `preprocess_like_nnssl` reads (spacing, patch_size) and the normalisation."""
    if not plans or configuration not in plans.get("configurations", {}):
        return None
    from nnssl_plugin.plans import resolve_configuration

    c = resolve_configuration(plans, configuration)
    keep = ("data_identifier", "preprocessor_name", "normalization_schemes", "use_mask_for_norm", "spacing",
            "patch_size", "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_seg",
            "resampling_fn_seg_kwargs")
    return {"dataset_name": plans.get("dataset_name"), "plans_name": plans.get("plans_name"),
            "original_median_spacing_after_transp": plans.get("original_median_spacing_after_transp"),
            "image_reader_writer": plans.get("image_reader_writer"),
            "transpose_forward": plans.get("transpose_forward"), "transpose_backward": plans.get("transpose_backward"),
            "configurations": {configuration: {k: c[k] for k in keep if k in c}},
            "experiment_planner_used": plans.get("experiment_planner_used")}


def master_pretrain_info(weights_path: str, network: torch.nn.Module, pretrain_channels: int,
                         pretrain_patch: list[int] | None, downstream_patch: list[int]) -> dict:
    """The keys nnU-Net's nnssl-side trainer reads from the plans' `pretrain_info` (written by its
    `preprocess_like_nnssl`), for an export of this plugin."""
    from pathlib import Path

    return {"checkpoint_path": str(Path(weights_path).resolve()), "checkpoint_name": Path(weights_path).name,
            "key_to_encoder": getattr(network, "key_to_encoder", None),
            "key_to_stem": getattr(network, "key_to_stem", None), "keys_to_in_proj": in_proj_keys(network),
            "key_to_lpe": None, "pt_num_in_channels": int(pretrain_channels),
            "pt_used_patchsize": list(pretrain_patch) if pretrain_patch else list(downstream_patch),
            "pt_recommended_downstream_patchsize": list(downstream_patch), "citations": []}


def known_class_names() -> dict[str, str]:
    """Every class torch.nn exports, by each name it is written under in plans and checkpoints (`torch.nn.X` and
    its defining module's `torch.nn.modules.<m>.X`), mapped to the defining module's name. Built by reading the
    already imported torch.nn, never by importing a name found in a file."""
    names = {}
    for attr in dir(torch.nn):
        cls = getattr(torch.nn, attr)
        if isinstance(cls, type):
            full = f"{cls.__module__}.{cls.__name__}"
            names[f"torch.nn.{attr}"] = full
            names[full] = full
    return names


def canonical_architecture(architecture: dict) -> dict:
    """An architecture block for comparison: class-valued kwargs written under any of torch.nn's names for one class
    (`torch.nn.LeakyReLU` and `torch.nn.modules.activation.LeakyReLU`) given one name (`known_class_names`), tuples
    as lists. Names are compared as strings: nothing named by a weights file or plans is imported (a name this
    plugin does not know stays as written and so differs from the target's)."""
    known = known_class_names()

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    kwargs = plain(dict(architecture.get("arch_kwargs") or {}))
    for key, value in kwargs.items():
        if isinstance(value, str) and value in known:
            kwargs[key] = known[value]
    name = architecture.get("network_class_name")
    return {"network_class_name": f"{UNET_MODULE}.{name}" if name in SHORT_NAMES else name, "arch_kwargs": kwargs}
