"""Downstream nnU-Net trainers for exported pretrained weights (DESIGN §6), found through nnUNet_extTrainer.

- `nnUNetTrainerSSLInit`: loads the weights named by the plans' `pretrain_info` in `initialize()`, whole network
  trainable, SGD with a lower initial learning rate, linear warm-up then poly decay.
- `nnUNetTrainerSSLScratch`: the same schedule from random initialisation: the fair baseline.
- `nnUNetTrainerSSLFrozenEncoder`: as SSLInit with the encoder frozen (not in the optimiser).
- `nnUNetTrainerSSLLinear`: the whole pretrained U-Net frozen; a linear probe over its multi-scale features is the
  only trainable part; after training it checks the frozen tensors are bit-identical to the loaded file.
For `moco_zca` exports every trainer that loads weights inserts the exported whitening at the bottleneck, built
in `build_network_architecture` from the plans, so `nnUNetv2_predict` rebuilds it. Variants (`_<N>epochs`,
`_<M>iters`, `_seed<K>`) are names resolved by `registry`.
"""
from __future__ import annotations

import os
import random
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export import matches_prefixes, sha256_of
from nnssl_plugin.modules.probe import LinearProbeNetwork
from nnssl_plugin.modules.whitening import attach_bottleneck_whitening
from nnssl_plugin.pretrained import architecture_hash
from nnssl_plugin.schedules import WarmupPolyLRScheduler


class nnUNetTrainerSSLScratch(nnUNetTrainer):
    """Random initialisation with the schedule every SSL trainer uses."""

    epochs: ClassVar[int | None] = None
    iterations: ClassVar[int | None] = None
    seed: ClassVar[int | None] = None
    ssl_initial_lr: ClassVar[float] = 5e-3  # half nnU-Net's 1e-2: pretrained weights should not be washed out
    warmup_fraction: ClassVar[float] = 0.05  # linear warm-up over the first 5 % of the epochs (at least one)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if self.seed is not None:
            random.seed(self.seed)
            np.random.seed(self.seed)
            torch.manual_seed(self.seed)
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations is not None:
            self.num_iterations_per_epoch = self.iterations
            self.num_val_iterations_per_epoch = max(1, self.iterations // 5)
        self.initial_lr = self.ssl_initial_lr

    def configure_optimizers(self):
        params = [p for p in self.network.parameters() if p.requires_grad]  # frozen parts are not optimised
        optimizer = torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        warmup = max(1, round(self.warmup_fraction * self.num_epochs))
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup)


class nnUNetTrainerSSLInit(nnUNetTrainerSSLScratch):
    """Fine-tuning from the exported weights (whole network trainable)."""

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return with_exported_whitening(network, plans_manager)

    def initialize(self):
        super().initialize()
        if self._resuming():
            self.print_to_log_file("--c found a checkpoint: pretrained weights are not loaded again")
            return
        self.loaded_weights = load_exported_weights(self, self._unet())

    def _resuming(self) -> bool:
        return bool(self.logger.resume) and any(
            os.path.isfile(os.path.join(self.output_folder, f))
            for f in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"))

    def _unet(self) -> nn.Module:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's --c, with a safe load (weights_only=True plus nnU-Net's numpy scalar types)."""
        if isinstance(filename_or_checkpoint, str):
            filename_or_checkpoint = safe_load(filename_or_checkpoint, map_location=self.device)
        super().load_checkpoint(filename_or_checkpoint)


class nnUNetTrainerSSLFrozenEncoder(nnUNetTrainerSSLInit):
    """The pretrained encoder frozen (requires_grad off, not in the optimiser); decoder and seg layers train."""

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        network = nnUNetTrainerSSLInit.build_network_architecture(plans_manager, configuration_manager,
                                                                  num_input_channels, num_output_channels,
                                                                  enable_deep_supervision)
        for p in network.encoder.parameters():
            p.requires_grad_(False)
        return network


class nnUNetTrainerSSLLinear(nnUNetTrainerSSLInit):
    """A linear probe over the frozen pretrained network's multi-scale features."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # one output: the summed probe

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        unet = nnUNetTrainerSSLInit.build_network_architecture(plans_manager, configuration_manager,
                                                               num_input_channels, num_output_channels, False)
        info = plans_manager.plans.get("pretrain_info") or {}
        levels = "decoder" if "decoder" in info.get("pretrained_prefixes", []) else "encoder"
        return LinearProbeNetwork(unet, num_output_channels, levels)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # the probe network has a single output

    def _unet(self) -> nn.Module:
        return super()._unet().unet

    def on_train_end(self):
        super().on_train_end()
        if not self.disable_checkpointing and getattr(self, "loaded_weights", None) is not None:
            n = verify_frozen_unchanged(self._unet(), self.loaded_weights)
            self.print_to_log_file(f"verified: the {n} frozen pretrained tensors are bit-identical to "
                                   f"{self.plans_manager.plans['pretrain_info']['weights']}: only the probe trained")


# ----- helpers (shared by the trainers; no trainer state beyond what they are given) ----------------------------
def with_exported_whitening(network: nn.Module, plans_manager: PlansManager) -> nn.Module:
    info = plans_manager.plans.get("pretrain_info") or {}
    whitening = info.get("whitening_shape")
    if whitening:
        attach_bottleneck_whitening(network, int(whitening[0]), int(whitening[1]))
    return network


def load_exported_weights(trainer: nnUNetTrainer, unet: nn.Module) -> dict[str, torch.Tensor]:
    """Load the exported weights of the plans' pretrain_info into `unet` (checks: file, sha256, architecture,
    input channels; strict for the pretrained prefixes). Returns the loaded pretrained tensors."""
    plans = trainer.plans_manager.plans
    info = plans.get("pretrain_info")
    if info is None:
        dataset_id = trainer.plans_manager.dataset_name[7:10]
        raise NnsslError(f"plans '{plans['plans_name']}' has no pretrain_info; run nnssl_export -d <pretraining "
                         f"dataset> -m <method> -t {int(dataset_id)} first and train with -p nnsslPlans_<method>")
    path = info["weights"]
    if not os.path.isfile(path):
        raise NnsslError(f"pretrained weights {path} (from plans '{plans['plans_name']}') not found; rerun "
                         f"nnssl_export --overwrite")
    if sha256_of(path) != info["sha256"]:
        raise NnsslError(f"{path} does not match the sha256 recorded in plans '{plans['plans_name']}' (changed or "
                         f"truncated since export); rerun nnssl_export --overwrite")
    payload = safe_load(path)
    expected = architecture_hash(trainer.configuration_manager.configuration["architecture"])
    if payload["target_plans"]["architecture_sha256"] != expected:
        raise NnsslError(f"{path} was exported for another architecture than configuration "
                         f"'{trainer.configuration_name}' of plans '{plans['plans_name']}'; export again for it")
    channels = payload["nnssl_adaptation_plan"]["pretrain_num_input_channels"]
    if channels != trainer.num_input_channels:
        raise NnsslError(f"{path} expects {channels} input channel(s), this dataset has {trainer.num_input_channels}")
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
    trainer.print_to_log_file(f"loaded {path} ({payload['method']}): {len(pretrained)} pretrained tensors under "
                              f"{prefixes}, {fresh} freshly initialised"
                              + ("; bottleneck whitening applied" if payload.get("whitening") else ""))
    return {k: v.detach().cpu().clone() for k, v in pretrained.items()}


def verify_frozen_unchanged(unet: nn.Module, loaded: dict[str, torch.Tensor]) -> int:
    state = unet.state_dict()
    changed = [k for k, v in loaded.items() if not torch.equal(state[k].detach().cpu(), v)]
    if changed:
        raise NnsslError(f"{len(changed)} frozen tensor(s) changed during training, e.g. {changed[0]}: the probe "
                         f"was not linear on frozen features")
    return len(loaded)
