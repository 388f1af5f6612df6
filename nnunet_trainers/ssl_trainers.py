"""Downstream nnU-Net trainers for exported pretrained weights, found through nnUNet_extTrainer (docs/ARCHITECTURE.md,
"Downstream trainers" and "How trainers are found").

- `nnUNetTrainerSSLInit`: loads the weights named by the plans' `pretrain_info` in `initialize()`, whole network
  trainable, SGD with a lower initial learning rate, linear warm-up then poly decay.
- `nnUNetTrainerSSLScratch`: the same schedule from random initialisation: the fair baseline. Scratch and Init are
  siblings: both derive from `SSLDownstreamTrainer` (schedule, seeding, refusal of `-pretrained_weights`, atomic
  checkpoints, safe `--c`).
- `nnUNetTrainerSSLFrozenEncoder`: as SSLInit with the encoder frozen (not in the optimiser).
- `nnUNetTrainerSSLLinear`: the whole pretrained U-Net frozen; a linear probe over its multi-scale features is the
  only trainable part; after training it checks the frozen tensors are bit-identical to the loaded file.
For `moco_zca` exports every trainer that loads weights inserts the exported whitening at the bottleneck, built
in `build_network_architecture` from the plans, so `nnUNetv2_predict` rebuilds it. Variants (`_<N>epochs`,
`_<M>iters`, `_seed<K>`) are names resolved by `registry`.

Plans without `pretrain_info` (`nnUNetv2_train D C F -tr nnUNetTrainerSSLInit`, no `-p`): the trainers that load
weights use the dataset's one export that fits the configuration and architecture (`export_lookup`); its
`pretrain_info` joins the run's plans, which nnU-Net copies into the run's `plans.json`, so `nnUNetv2_predict` without
`-p` rebuilds the same network. None or several fitting exports, and nnU-Net's `-pretrained_weights` (which the
plugin's trainers refuse), end the command in `__init__` with one line on stderr and exit code 1, before nnU-Net
creates the run's folders.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnssl_plugin.checkpoints import load_checkpoint_file, publish_written_file
from nnssl_plugin.disk_space import full_disk_is_one_line
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export_loading import load_exported_weights, verify_frozen_unchanged
from nnssl_plugin.export_lookup import export_command, plans_with_export, select_export
from nnssl_plugin.modules.probe import LinearProbeNetwork
from nnssl_plugin.modules.probe_levels import attach_exported_whitening, level_set_for
from nnssl_plugin.paths import preprocessed_folder
from nnssl_plugin.rng import seed_run
from nnssl_plugin.schedules import WarmupPolyLRScheduler
from nnssl_plugin.trainer_names import run_folder
from nnssl_plugin.trainer_plumbing import restore_nnunet_state, unwrap


NNUNET_TRAIN_PROGRAMS = ("nnUNetv2_train", "run_training.py")  # the console script, `python -m ...run_training`


def nnunet_train_arguments(argv: list[str] | None = None) -> list[str] | None:
    """The arguments of nnU-Net's training command when this process is one (`sys.argv` by default), else None.

    nnU-Net 2.8.1 keeps some of what the user asked for from the trainer: `-pretrained_weights FILE` is loaded by
    `run_training` after `initialize()` (with its own unrestricted `torch.load`, every key asserted), and `--val`
    reaches it as nothing at all. Reading the command line is the only way to see them before nnU-Net acts (DDP
    workers, spawned, get the same `sys.argv`)."""
    argv = sys.argv if argv is None else argv
    return list(argv[1:]) if argv and Path(argv[0]).name in NNUNET_TRAIN_PROGRAMS else None


def pretrained_weights_argument(argv: list[str] | None = None) -> str | None:
    """FILE of `nnUNetv2_train ... -pretrained_weights FILE` (or `-pretrained_weights=FILE`), else None. argparse
    accepts no shorter spelling (`-pre...` is ambiguous with `-p`)."""
    args = nnunet_train_arguments(argv) or []
    for i, arg in enumerate(args):
        if arg == "-pretrained_weights":
            return args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith("-pretrained_weights="):
            return arg.partition("=")[2]
    return None


def stop_with_one_line(trainer_name: str, message: str) -> None:
    """End nnU-Net's command as the plugin's commands end on bad input: `<trainer>: error: <message>` on stderr,
    exit code 1, no traceback (SystemExit passes through nnU-Net's entry point untouched)."""
    print(f"{trainer_name}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


class SSLDownstreamTrainer(nnUNetTrainer):
    """What every downstream trainer of the plugin shares: run length and seed from the name, the SSL schedule
    (SGD, lower initial rate, warm-up then poly), the refusal of `-pretrained_weights`, atomic checkpoints and a
    safe `--c`. Not a trainer to run (no refusal message of its own); its subclasses are."""

    epochs: ClassVar[int | None] = None
    iterations: ClassVar[int | None] = None
    seed: ClassVar[int | None] = None
    ssl_initial_lr: ClassVar[float] = 5e-3  # half nnU-Net's 1e-2: pretrained weights should not be washed out
    warmup_fraction: ClassVar[float] = 0.05  # linear warm-up over the first 5 % of the epochs (at least one)
    validation_mirroring: ClassVar[bool] = True  # False (_noTTA): final validation without test-time mirroring

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # everything that can refuse the run happens before nnU-Net's __init__, which creates the output folder
        name = type(self).__name__
        weights_file = pretrained_weights_argument()
        if weights_file is not None:
            stop_with_one_line(name, self.pretrained_weights_refusal(weights_file, plans, configuration))
        try:
            plans, note = self.plans_for_run(plans, configuration)
        except NnsslError as e:
            stop_with_one_line(name, str(e))
        if self.seed is not None:
            seed_run(self.seed)
        super().__init__(plans, configuration, fold, dataset_json, device)
        if note:
            self.print_to_log_file(note, also_print_to_console=True)
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations is not None:
            self.num_iterations_per_epoch = self.iterations
            self.num_val_iterations_per_epoch = max(1, self.iterations // 5)
        self.initial_lr = self.ssl_initial_lr
        self.save_every = min(50, max(1, self.num_epochs // 10))  # nnU-Net's 50 for long runs; short runs too

    @classmethod
    def plans_for_run(cls, plans: dict, configuration: str) -> tuple[dict, str | None]:
        """The plans this trainer builds and trains from, and a line for the log saying what was chosen (None:
        the plans as given). Scratch needs no export."""
        return plans, None

    @classmethod
    def pretrained_weights_refusal(cls, weights_file: str, plans: dict, configuration: str) -> str:
        """Why `-pretrained_weights` is refused, and the route to take instead (one line)."""
        raise NotImplementedError

    def initialize(self):
        """nnU-Net's initialize (and the subclass's loading of the export): under nnU-Net's own command a refusal
        of the plugin (a missing, truncated or replaced weights file, another architecture) ends it with one line
        `<trainer>: error: <message>` and exit code 1, as the plugin's commands end; called from Python it raises."""
        try:
            self._initialize_network()
        except NnsslError as e:
            if nnunet_train_arguments() is None:
                raise
            stop_with_one_line(type(self).__name__, str(e))

    def _initialize_network(self) -> None:
        super().initialize()

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
        elif self.inference_allowed_mirroring_axes:
            self.print_to_log_file(tta_cost_line(type(self).__name__, self.inference_allowed_mirroring_axes))
        super().perform_actual_validation(save_probabilities)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically (temp file, fsync, rename; the replaced latest kept as
        checkpoint_previous.pth): a kill mid-write never leaves half a checkpoint."""
        tmp = f"{filename}.writing"
        try:  # a full disk: one line naming the folder and the space needed, no half-written temp file
            with full_disk_is_one_line(filename):
                super().save_checkpoint(tmp)  # writes nothing on other DDP ranks or with checkpointing disabled
        except NnsslError as e:
            Path(tmp).unlink(missing_ok=True)
            stop_with_one_line(type(self).__name__, str(e))
        if os.path.isfile(tmp):
            publish_written_file(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's --c, with a safe load (weights_only=True plus nnU-Net's numpy scalar types), the previous
        checkpoint as fallback for an unreadable latest one, and nnU-Net's restoring of the contents
        (`trainer_plumbing.restore_nnunet_state`) instead of its unrestricted unpickling."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = (load_checkpoint_file(filename_or_checkpoint, self.device, self.print_to_log_file)
                      if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint)
        restore_nnunet_state(self, checkpoint)

    def _unet(self) -> nn.Module:
        """The planned U-Net (no DDP / compile wrapper)."""
        return unwrap(self.network)


def _refusal_for_an_export(weights_file: str) -> str | None:
    """`-pretrained_weights` given an export's own weights file: train with its plans (re-exporting it would change
    nothing); None for any other file."""
    export_plans = export_plans_of(weights_file)
    if export_plans is None:
        return None
    return (f"-pretrained_weights is not taken by the plugin's trainers (nnU-Net would unpickle {weights_file} "
            f"without restriction and skip the plugin's checks); {weights_file} is the weights of the export "
            f"'{export_plans}': train with -p {export_plans} instead of -pretrained_weights")


class nnUNetTrainerSSLScratch(SSLDownstreamTrainer):
    """Random initialisation with the schedule every SSL trainer uses: the fair baseline."""

    @classmethod
    def pretrained_weights_refusal(cls, weights_file: str, plans: dict, configuration: str) -> str:
        if (refusal := _refusal_for_an_export(weights_file)) is not None:
            return refusal
        command = export_command(plans, configuration)
        return (f"-pretrained_weights is not taken by the plugin's trainers ({cls.__name__} is the "
                f"random-initialisation baseline; nnU-Net would unpickle {weights_file} without restriction and "
                f"skip the plugin's checks); export the weights with {command} --checkpoint {weights_file} and "
                f"fine-tune with -tr nnUNetTrainerSSLInit")


class nnUNetTrainerSSLInit(SSLDownstreamTrainer):
    """Fine-tuning from the exported weights (whole network trainable)."""

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return attach_exported_whitening(network, plans_manager.plans.get("pretrain_info"))

    @classmethod
    def plans_for_run(cls, plans: dict, configuration: str) -> tuple[dict, str | None]:
        """Plans with `pretrain_info` (an export, `-p nnsslPlans_<method>`) as given; otherwise the run's plans with
        the export that fits (`export_lookup.select_export`), or, when nnU-Net resumes (`--c`) or only validates
        (`--val`), with the export this run recorded in its `plans.json`."""
        if plans.get("pretrain_info") is not None:
            return plans, None
        recorded = cls.recorded_pretrain_info(plans, configuration)
        if recorded is not None:
            return {**plans, "pretrain_info": recorded}, (
                f"plans '{plans['plans_name']}' name no pretrained weights: this run continues with the export it "
                f"recorded, '{recorded.get('export_plans')}' ({recorded.get('method')})")
        export = select_export(plans, configuration, preprocessed_folder() / plans["dataset_name"])
        return plans_with_export(plans, export), (
            f"plans '{plans['plans_name']}' name no pretrained weights: using the one export that fits "
            f"configuration '{configuration}', '{export.name}' ({export.method}, weights "
            f"{export.plans['pretrain_info']['weights']}); recorded in this run's plans.json")

    @classmethod
    def recorded_pretrain_info(cls, plans: dict, configuration: str) -> dict | None:
        """The `pretrain_info` of this run's own `plans.json` (nnU-Net's output folder formula) when nnU-Net resumes
        (`--c`) or only validates (`--val`): the network must be the one the checkpoint was trained with, whatever
        exports were added since. None otherwise."""
        resuming = plans.get("continue_training") or "--val" in (nnunet_train_arguments() or [])
        results = os.environ.get("nnUNet_results")
        if not resuming or not results:
            return None
        path = Path(results) / plans["dataset_name"] / run_folder(cls.__name__, plans["plans_name"], configuration) / \
            "plans.json"
        try:
            return json.loads(path.read_text()).get("pretrain_info")
        except (OSError, ValueError):
            return None

    @classmethod
    def pretrained_weights_refusal(cls, weights_file: str, plans: dict, configuration: str) -> str:
        if (refusal := _refusal_for_an_export(weights_file)) is not None:
            return refusal
        command = export_command(plans, configuration)
        return (f"-pretrained_weights is not taken by the plugin's trainers (nnU-Net would unpickle {weights_file} "
                f"without restriction and skip the plugin's checks); export the weights with {command} "
                f"--checkpoint {weights_file}, then train without -pretrained_weights: without -p the one export "
                f"that fits is used, -p <export plans> picks one")

    def _initialize_network(self) -> None:
        super()._initialize_network()
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


def tta_cost_line(trainer_name: str, axes) -> str:
    """The one log line that announces what nnU-Net's final validation with test-time mirroring costs: every
    sliding window is predicted once per subset of the mirroring axes, 2^len(axes) passes."""
    passes = 2 ** len(tuple(axes))
    return (f"final validation with test-time mirroring over axes {tuple(axes)}: {passes} network passes per window, "
            f"about {passes}x the time of a validation without it (minutes per case on a CPU); the trainer "
            f"{trainer_name}_noTTA skips the mirroring (nnUNetv2_predict still mirrors)")


def export_plans_of(weights_file: str) -> str | None:
    """The plans name of the export whose weights file `weights_file` is (`<plans>_weights.pth` beside `<plans>.json`
    whose `pretrain_info` names that file), else None. Only the JSON is read; the weights file is not opened."""
    path = Path(weights_file)
    if not path.name.endswith("_weights.pth"):
        return None
    plans_name = path.name[: -len("_weights.pth")]
    try:
        info = json.loads(path.with_name(f"{plans_name}.json").read_text()).get("pretrain_info") or {}
    except (OSError, ValueError):
        return None
    named = Path(str(info.get("weights", "")))
    return plans_name if named.name == path.name else None


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

