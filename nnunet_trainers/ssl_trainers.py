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

from nnssl_plugin.checkpoints import load_checkpoint_file, publish_written_file
from nnssl_plugin.export import load_exported_weights, verify_frozen_unchanged
from nnssl_plugin.modules.probe import LinearProbeNetwork
from nnssl_plugin.modules.probe_levels import attach_exported_whitening, level_set_for
from nnssl_plugin.schedules import WarmupPolyLRScheduler


class nnUNetTrainerSSLScratch(nnUNetTrainer):
    """Random initialisation with the schedule every SSL trainer uses."""

    epochs: ClassVar[int | None] = None
    iterations: ClassVar[int | None] = None
    seed: ClassVar[int | None] = None
    ssl_initial_lr: ClassVar[float] = 5e-3  # half nnU-Net's 1e-2: pretrained weights should not be washed out
    warmup_fraction: ClassVar[float] = 0.05  # linear warm-up over the first 5 % of the epochs (at least one)
    validation_mirroring: ClassVar[bool] = True  # False (_noTTA): final validation without test-time mirroring

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
        self.save_every = min(50, max(1, self.num_epochs // 10))  # nnU-Net's 50 for long runs; short runs too

    def configure_optimizers(self):
        params = [p for p in self.network.parameters() if p.requires_grad]  # frozen parts are not optimised
        optimizer = torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        warmup = max(1, round(self.warmup_fraction * self.num_epochs))
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.validation_mirroring:  # after checkpoint_final is written: nnUNetv2_predict still mirrors
            self.inference_allowed_mirroring_axes = None
            self.print_to_log_file("final validation without test-time mirroring (_noTTA)")
        super().perform_actual_validation(save_probabilities)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically (temp file, fsync, rename; the replaced latest kept as
        checkpoint_previous.pth): a kill mid-write never leaves half a checkpoint."""
        tmp = f"{filename}.writing"
        super().save_checkpoint(tmp)  # writes nothing on other DDP ranks or with checkpointing disabled
        if os.path.isfile(tmp):
            publish_written_file(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's --c, with a safe load (weights_only=True plus nnU-Net's numpy scalar types) and the previous
        checkpoint as fallback for an unreadable latest one.

        nnU-Net 2.8.1's `load_checkpoint` only binds its checkpoint when given a path (a dict raises
        UnboundLocalError) and then unpickles it without restrictions; so it gets the path, and for the
        duration of that call `torch.load` is our safe loader (the file is read before, errors stay ours)."""
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError("nnU-Net 2.8.1 resumes from a checkpoint path only")
        checkpoint = load_checkpoint_file(filename_or_checkpoint, self.device, self.print_to_log_file)
        original = torch.load
        torch.load = lambda *args, **kwargs: checkpoint  # noqa: E731 - the already safely loaded file
        try:
            super().load_checkpoint(filename_or_checkpoint)
        finally:
            torch.load = original


class nnUNetTrainerSSLInit(nnUNetTrainerSSLScratch):
    """Fine-tuning from the exported weights (whole network trainable)."""

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return attach_exported_whitening(network, plans_manager.plans.get("pretrain_info"))

    def initialize(self):
        super().initialize()
        if self._resuming():
            self.print_to_log_file("--c found a checkpoint: pretrained weights are not loaded again")
            return
        self.loaded_weights, message = load_exported_weights(
            self.plans_manager.plans, self.configuration_manager.configuration["architecture"],
            self.num_input_channels, self._unet(), self.configuration_name)
        self.print_to_log_file(message)

    def _resuming(self) -> bool:
        return bool(self.logger.resume) and any(
            os.path.isfile(os.path.join(self.output_folder, f))
            for f in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"))

    def _unet(self) -> nn.Module:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod


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

    # Only a freshly initialised 1x1x1 head trains, so the reason for halving nnU-Net's rate (protect pretrained
    # weights) does not apply. Measured on the phantom (hier export, seed 0, 15 x 20 iterations, 3d_cpu): mean
    # validation Dice 0.079 at 5e-2 vs 0.034 at 5e-3 - the probe barely left the background at the lower rate.
    ssl_initial_lr: ClassVar[float] = 5e-2

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
        return LinearProbeNetwork(unet, num_output_channels, level_set_for(info.get("pretrained_prefixes", [])))

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

