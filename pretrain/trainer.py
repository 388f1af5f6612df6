"""The pretraining stage: nnU-Net's own training loop with a self-supervised objective (docs/ARCHITECTURE.md,
"Data flow" and "The methods").

`nnsslPretrainer` is an nnUNetTrainer run on fold `all`: nnU-Net's epochs, checkpoints, `--c`, AMP, DDP and logs.
It swaps the network (the planned U-Net, or its encoder, wrapped with the method's heads, one `self.network`), the
data loader (two views per case), train/validation steps and epoch logging (SSL losses, pretext top-1, effective rank),
writes the target-agnostic pretrained weights at the end, and skips nnU-Net's segmentation
validation. With `--eval-target` it runs the held-out hook (nnssl_plugin.heldout) and, with `--probe-every`, the online
probe (nnssl_plugin.probe.online). Method and run length come from class attributes set by `registry` (a variant is
a config).

The trainer is method-agnostic: the config's family row (nnssl_plugin.families) gives the network class, built with
`from_plan` and used only through the contract of nnssl_plugin.modules.network_protocol (forward -> StepOutput
{"loss", "terms", "top1", "embeddings"}, `after_step(out)` after the optimiser step, `pretrained_state`,
`compile_encoder`, `min_cases`, `sample_unit`), the loader's views and the held-out evaluation.
"""
from __future__ import annotations

import os
import signal
import time
from typing import ClassVar

import numpy as np
import torch
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from torch.nn.parallel import DistributedDataParallel as DDP

from nnssl_plugin import run_lock
from nnssl_plugin.checkpoints import load_checkpoint_file, save_checkpoint_file
from nnssl_plugin.config import MethodConfig, with_options
from nnssl_plugin.data.two_view import TwoViewDataLoader
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.families import family_of
from nnssl_plugin.intensity import restoration_ranges, unit_ranges
from nnssl_plugin.modules.network_protocol import PlanContext
from nnssl_plugin.ops.rank import effective_rank
from nnssl_plugin.run_record import (check_resumed_recipe, read_run_record, refuse_other_method, run_settings,
                                     write_run_record)
from nnssl_plugin.schedules import StepwiseLRScheduler, warmup_line
from nnssl_plugin.pretrained import WEIGHTS_FILE, plans_identity, pretrained_payload, write_pretrained_weights
from nnssl_plugin.heldout import HeldoutConfig, HeldoutEvaluator, bottleneck_channels
from nnssl_plugin.io_utils import atomic_write_json
from nnssl_plugin.loader_shutdown import QuietlyFinishingAugmenter
from nnssl_plugin.memory import peak_memory_line
from nnssl_plugin.stop_signals import StopSignals, StopTraining
from nnssl_plugin.precision import autocast
from nnssl_plugin.rng import capture as capture_rng, restore as restore_rng, seed_run
from nnssl_plugin.trainer_plumbing import restore_nnunet_state, unwrap
from nnssl_plugin.worker_death import arm_workers_of
from nnssl_plugin.probe.online import OnlineProbe
from nnssl_plugin.ssl_logging import SSLLocalLogger, log_heldout, log_probe

TOO_EASY_TOP1 = 0.99  # a pretext top-1 this high early in training means the views are too similar


class nnsslPretrainer(nnUNetTrainer):
    method_config: ClassVar[MethodConfig]
    epochs: ClassVar[int | None] = None  # None: nnU-Net's default (1000)
    iterations: ClassVar[int | None] = None  # None: nnU-Net's default (250)
    seed: ClassVar[int | None] = None
    recipe_tag: ClassVar[str | None] = None  # `_r<hash>` of a non-default recipe (nnssl_plugin.recipe)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if self.seed is not None:  # before anything random: network init, queue init, sampling
            seed_run(self.seed)  # + the DDP rank: ranks draw different crops; DDP broadcasts rank 0's weights
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations is not None:
            self.num_iterations_per_epoch = self.iterations
            self.num_val_iterations_per_epoch = max(16, self.iterations // 5)  # enough crops for the rank monitor
        self.recipe, self.method_options = run_settings(self.output_folder, self.method_config.family, self.recipe_tag)
        self.method_config = with_options(type(self).method_config, self.method_options)  # this run's variant
        self.family = family_of(self.method_config)  # network, views, held-out evaluation, loss terms, batch keys
        self.initial_lr, self.weight_decay = self.recipe.lr, self.recipe.weight_decay
        record = read_run_record(self.output_folder)
        self.heldout_settings = record.get("heldout") if record is not None else None
        self.precision = record.get("precision", "amp") if record is not None else "amp"
        # checkpoint_latest after every epoch by default (nnU-Net: every 50, hours on a GPU): a preempted or
        # signalled run loses one epoch at most; `--save-every K` for a set interval
        self.save_every = int(record.get("save_every", 1)) if record is not None else 1
        self._latest_epoch: int | None = None  # the epoch checkpoint_latest.pth ends with (None: none written)
        if self.precision == "bf16":  # bf16 autocast on any device; its range needs no loss scaling
            self.grad_scaler = None
        self.nonfinite_steps = 0  # optimiser steps skipped because a gradient was NaN/Inf (checkpointed)
        self.heldout: HeldoutEvaluator | None = None
        self.online_probe: OnlineProbe | None = None
        self.logger.local_logger = SSLLocalLogger(self.family.loss_terms)
        self._pending_rng_state = None
        self._stop: StopSignals | None = None  # active while run_training runs
        self._last_val_embeddings: dict[str, np.ndarray] = {}

    # ----- network ------------------------------------------------------------------------------------------------
    def initialize(self):
        if self.was_initialized:
            raise RuntimeError("initialize() called twice")
        if self.recipe.batch_size is not None:  # before nnU-Net splits the batch over DDP ranks
            self.configuration_manager.configuration["batch_size"] = self.recipe.batch_size
        self._set_batch_size_and_oversample()
        self._check_enough_cases()
        self.num_input_channels = determine_num_input_channels(self.plans_manager, self.configuration_manager,
                                                               self.dataset_json)
        unet = self.build_network_architecture(self.plans_manager, self.configuration_manager,
                                               self.num_input_channels, self.label_manager.num_segmentation_heads,
                                               enable_deep_supervision=False)
        config = self.configuration_manager.configuration
        plan = PlanContext(self.num_input_channels, self.batch_size, tuple(self.configuration_manager.patch_size),
                           tuple(config["architecture"]["arch_kwargs"]["strides"]),
                           tuple(unit_ranges(self.plans_manager.plans, config)),
                           tuple(restoration_ranges(self.plans_manager.plans, config)))
        try:
            self.network = self.family.network.from_plan(unet, self.method_config, plan)
        except ValueError as e:
            raise NnsslError(f"{self.plans_manager.plans_name}/{self.configuration_name}: {e}") from None
        self.network = self.network.to(self.device)
        if self._do_i_compile():
            self.print_to_log_file("Using torch.compile on the U-Net pass (heads, queue and EMA stay outside)")
            self.network.compile_encoder()
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
        if self.is_ddp:
            self.network = DDP(self.network, device_ids=[self.local_rank])
        self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        self.was_initialized = True
        self.print_to_log_file(f"nnssl pretraining: {self.method_config}")
        self.print_to_log_file(f"network: {self.ssl_network.summary()}")
        self.print_to_log_file(f"optimiser recipe: {self.recipe} (batch size {self.batch_size})")
        self.print_to_log_file(warmup_line(self.recipe.lr, self.recipe.warmup_steps,
                                           self.num_epochs * self.num_iterations_per_epoch))

    def _check_enough_cases(self) -> None:
        """Refuse, in one line, a set of fewer cases than the family's network needs (`min_cases`: the MoCo family
        draws its negatives from other cases)."""
        folder = self.preprocessed_dataset_folder
        cases = infer_dataset_class(folder).get_identifiers(folder)
        need = self.family.network.min_cases
        if len(cases) < need:
            raise NnsslError(f"{self.method_config.method} needs at least {need} unlabelled cases (negatives come from "
                             f"other cases), {self.preprocessed_dataset_folder} holds {len(cases)}; prepare more "
                             f"cases with nnssl_prepare")

    def configure_optimizers(self):
        """The run's recipe (nnssl_plugin.recipe): SGD (Nesterov) or AdamW, per-step warm-up and decay."""
        params = [p for p in self.network.parameters() if p.requires_grad]  # the EMA key branch is frozen
        r = self.recipe
        if r.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, r.lr, weight_decay=r.weight_decay, momentum=r.momentum, nesterov=True)
        else:
            optimizer = torch.optim.AdamW(params, r.lr, betas=(r.momentum, 0.999), weight_decay=r.weight_decay)
        return optimizer, StepwiseLRScheduler(optimizer, r.lr, self.num_iterations_per_epoch, self.num_epochs,
                                              r.warmup_steps, r.schedule)

    @property
    def ssl_network(self):
        """The unwrapped pretraining network (without DDP / compile wrappers)."""
        return unwrap(self.network)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # pretraining never uses the segmentation outputs

    def plot_network_architecture(self):
        pass

    def _build_loss(self):
        return None

    # ----- data ---------------------------------------------------------------------------------------------------
    def two_view_loader(self, dataset) -> TwoViewDataLoader:
        """The method's two-view sampler over `dataset` (augmentations and voxel sampling from its config)."""
        patch = self.configuration_manager.patch_size
        options = self.family.views(self.method_config, len(patch) == 2, self.plans_manager.plans,
                                    self.configuration_manager.configuration)
        return TwoViewDataLoader(dataset, self.batch_size, patch, self.label_manager, **options)

    def get_dataloaders(self):
        loaders = [self.two_view_loader(ds) for ds in self.get_tr_and_val_datasets()]
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            augmenters = [SingleThreadedAugmenter(dl, None) for dl in loaders]
        else:
            for dl in loaders:  # a SIGKILLed run (OOM killer) leaves no orphaned worker
                arm_workers_of(dl)
            augmenters = [QuietlyFinishingAugmenter(data_loader=dl, transform=None, num_processes=n,  # no traceback
                                                    num_cached=max(3, n), seeds=None,  # when stopped (SIGTERM)
                                                    pin_memory=self.device.type == "cuda", wait_time=0.002)
                          for dl, n in zip(loaders, (processes, max(1, processes // 2)))]
        for a in augmenters:
            next(a)
        return augmenters

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:  # the record of what ran (nnssl_pretrain wrote it already; nnUNetv2_train did not)
            write_run_record(self.output_folder, self.recipe, self.heldout_settings, self.method_options,
                             self.precision, self.save_every)
        resumed = self._pending_rng_state is not None
        if resumed:  # --c: continue the random streams where the checkpoint left them
            restore_rng(self._pending_rng_state, self.print_to_log_file)
            self._pending_rng_state = None
        self.logger.local_logger.title = self._figure_title()
        if self.heldout_settings is not None:  # every rank: the evaluation's forwards hold collectives under DDP
            self.heldout = HeldoutEvaluator.create(self.heldout_settings["target"], self.plans_manager.plans,
                                                   self.configuration_name, self.preprocessed_dataset_folder,
                                                   self.two_view_loader, self.ssl_network, self.batch_size,
                                                   self.family.heldout, self.family.heldout_negatives,
                                                   HeldoutConfig(every=self.heldout_settings["every"]),
                                                   self.precision)
            self.print_to_log_file(self.heldout.description)
            if not resumed and self.current_epoch == 0:  # the initialisation's values: the untrained reference
                values = self.heldout.evaluate(self.ssl_network, self.device)
                self.print_to_log_file(f"held-out at initialisation: {self.heldout.summary(values)}")
                if self.local_rank == 0:
                    atomic_write_json(os.path.join(self.output_folder, "heldout_init.json"), values)
            if self.heldout_settings.get("probe_every", 0) > 0:  # one process (refused under DDP)
                self._start_online_probe(self.heldout_settings["probe_every"], resumed)

    def _figure_title(self) -> str:
        """progress.png's title: method, dataset, configuration (and the held-out target)."""
        title = (f"{self.method_config.method} pretraining on {self.plans_manager.dataset_name}, "
                 f"{self.configuration_name}")
        if self.heldout_settings is not None:
            title += f" (held out: {self.heldout_settings['target']})"
        return title

    def _start_online_probe(self, every: int, resumed: bool) -> None:
        """The online probe (nnssl_plugin.probe.online) and its random-init reference."""
        self.online_probe = OnlineProbe.create(self.heldout_settings["target"], self.plans_manager.plans,
                                               self.configuration_name, self.method_config.method, self.seed, every,
                                               self.output_folder, self.precision)
        self.print_to_log_file(self.online_probe.description)
        dice, seconds = self.online_probe.start(self.device, resumed)
        self.print_to_log_file(f"online probe, random init: mean Dice {dice:.3f}; "
                               + (f"{seconds:.1f} s" if seconds is not None else "the record of an earlier start"))

    # ----- steps --------------------------------------------------------------------------------------------------
    def _forward(self, batch: dict) -> dict:
        """The family's batch keys on the device, its geometry keys on the CPU, under the run's autocast."""
        on_device = {k: batch[k].to(self.device, non_blocking=True) for k in self.family.batch_keys if k in batch}
        geometry = {k: batch[k] for k in self.family.geometry_keys if k in batch}
        with autocast(self.device, self.precision):
            return self.network(**on_device, **geometry)

    def _do_i_compile(self) -> bool:
        """nnU-Net's switch (on by default on CUDA, nnUNet_compile=0 turns it off), except that nnUNet_compile=1 set
        explicitly also compiles on a CPU, where nnU-Net never does (its 2D models crashed there): the compiled U-Net
        pass is tested on a 3D CPU configuration before it meets a GPU."""
        explicit = os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t")
        return True if self.device.type == "cpu" and explicit else super()._do_i_compile()

    def _check_finite(self, out: dict) -> None:
        if not torch.isfinite(out["loss"]):
            last = {k: self.logger.get_value(k, step=-1) for k in ("train_losses", *self.family.loss_terms)
                    if self.logger.get_value(k, step=None)}
            raise NnsslError(f"non-finite SSL loss ({float(out['loss'])}) in epoch {self.current_epoch}; last "
                             f"finite epoch values {last}; checkpoints are intact: lower the learning rate or check "
                             f"the data, then resume with --c")

    def run_training(self):
        """nnU-Net's loop, stopping gracefully at a step boundary on SIGTERM/SIGUSR1/Ctrl-C (`stop_signals`): the
        handlers are in place before nnU-Net starts its loader workers, which inherit them."""
        with StopSignals() as self._stop:
            try:
                super().run_training()
            except StopTraining as stop:
                self._stopped_by_signal(stop.signum)
            finally:
                self._stop = None

    def _stopped_by_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        latest = os.path.join(self.output_folder, "checkpoint_latest.pth")
        resume = (f"{latest} (after epoch {self._latest_epoch}) is the resume point: run the same command with --c"
                  if os.path.isfile(latest) and self._latest_epoch is not None else
                  "no checkpoint was written yet, so there is nothing to resume")
        self.print_to_log_file(f"{name} received: stopped during epoch {self.current_epoch}; {resume}")
        self._finish_loaders()
        raise SystemExit(128 + signum)

    def _finish_loaders(self) -> None:
        """Stop nnU-Net's background loader workers (what its on_train_end does)."""
        for loader in (self.dataloader_train, self.dataloader_val):
            if hasattr(loader, "_finish"):  # the multi-process augmenters; the single-threaded one has no workers
                loader._finish()

    def train_step(self, batch: dict) -> dict:
        if self._stop is not None and (signum := self._stop.requested(self.device)):
            raise StopTraining(signum)
        self.optimizer.zero_grad(set_to_none=True)
        out = self._forward(batch)
        self._check_finite(out)
        if out["terms"]:  # no term yet (MoCo while its queue fills): nothing to learn from, no optimiser step
            self._backward_and_step(out["loss"])
        self._announce_new_terms(out["terms"])
        self.ssl_network.after_step(out)
        self.lr_scheduler.advance()
        return self._scalars(out)

    def _announce_new_terms(self, terms: dict) -> None:
        """Once per run, the step where a loss term first appears after the first step (MoCo's global InfoNCE waits
        for real keys in its queue): the total loss then steps up by that term's value, which is not a divergence."""
        started = getattr(self, "_terms_started", None)
        if started is None:  # the run's first step here (a resumed run: its terms started before)
            self._terms_started = set(terms) if self.current_epoch == 0 else set(self.family.loss_terms) | set(terms)
            return
        for name in sorted(set(terms) - started):
            started.add(name)
            step = self.lr_scheduler.global_step - self.current_epoch * self.num_iterations_per_epoch
            self.logger.local_logger.term_starts[name] = self.current_epoch - 0.5 + step / self.num_iterations_per_epoch
            self.print_to_log_file(
                f"the '{name}' loss term starts now (epoch {self.current_epoch}; it waits until the method can compute "
                f"it, e.g. MoCo's global InfoNCE for enough real keys in its queue): the total loss steps up by about "
                f"{float(terms[name]):.2f} from here, which is not a divergence")

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward, unscale (AMP), clip to the recipe's norm, and step — unless a gradient is NaN/Inf (e.g. eigh
        of near-equal eigenvalues in the whitening): then the step is skipped, counted and logged, so a non-finite
        value never reaches a weight. A non-finite loss already stopped the run in `_check_finite`."""
        scaler = self.grad_scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        clip = self.recipe.grad_clip if self.recipe.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.network.parameters() if p.grad is not None], clip)
        if not torch.isfinite(norm):
            self.nonfinite_steps += 1
            self.print_to_log_file(f"non-finite gradient (norm {float(norm)}) in epoch {self.current_epoch}: step "
                                   f"skipped ({self.nonfinite_steps} skipped so far)")
            self.optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.update()  # lowers the scale, as a skipped AMP step does
            return
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()

    def _scalars(self, out: dict) -> dict:
        # no term (MoCo's queue still filling): no loss to average; the step is left out of the epoch means
        return {"loss": out["loss"].item() if out["terms"] else None, "top1": out["top1"],
                **{k: (out["terms"][k].item() if k in out["terms"] else None) for k in self.family.loss_terms}}

    def validation_step(self, batch: dict) -> dict:
        out = self._forward(batch)
        scalars = self._scalars(out)
        scalars["embeddings"] = {k: v.float().cpu().numpy() for k, v in out["embeddings"].items()}
        return scalars

    # ----- epoch bookkeeping ----------------------------------------------------------------------------------------
    def on_train_epoch_end(self, train_outputs: list[dict]):
        for key, log_key in (("loss", "train_losses"), ("top1", "top1_train")):
            values = [o[key] for o in train_outputs if o[key] is not None]
            self.logger.log(log_key, float(np.mean(values)) if values else None, self.current_epoch)
        for key in self.family.loss_terms:  # a term skipped in a step with a loss counts 0 (moco_zca's global): the means add up
            values = [o[key] for o in train_outputs if o["loss"] is not None]
            mean = float(np.mean([0.0 if v is None else v for v in values])) if any(v is not None for v in values) \
                else None
            self.logger.log(key, mean, self.current_epoch)

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        losses = [o["loss"] for o in val_outputs if o["loss"] is not None]
        self.logger.log("val_losses", float(np.mean(losses)) if losses else None, self.current_epoch)
        top1 = [o["top1"] for o in val_outputs if o["top1"] is not None]  # None: MoCo's queue still filling
        self.logger.log("top1_val", float(np.mean(top1)) if top1 else None, self.current_epoch)
        names = val_outputs[0]["embeddings"].keys()
        self._last_val_embeddings = {name: np.concatenate([o["embeddings"][name] for o in val_outputs])
                                     for name in names}
        self.logger.log("erank", {name: effective_rank(torch.from_numpy(z))
                                  for name, z in self._last_val_embeddings.items()}, self.current_epoch)
        self.logger.local_logger.rank_limits.update({name: int(min(z.shape))  # samples or dimensions, the fewer
                                                     for name, z in self._last_val_embeddings.items()})

    def on_epoch_end(self):
        self.logger.log("epoch_end_timestamps", time.time(), self.current_epoch)
        get = lambda key: self.logger.get_value(key, step=-1)  # noqa: E731
        terms = ", ".join(f"{k[len('loss_'):]} {get(k):.4f}" for k in self.family.loss_terms if get(k) is not None)
        fmt = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}f}"  # noqa: E731
        self.print_to_log_file(f"train_loss {fmt(get('train_losses'), 4)} (weighted terms: {terms}), val_loss on "
                               f"training cases {fmt(get('val_losses'), 4)}")
        ranks = ", ".join(f"{name} {value:.2f}" for name, value in get("erank").items())
        self.print_to_log_file(f"pretext top-1 train {fmt(get('top1_train'))} val on training cases "
                               f"{fmt(get('top1_val'))}; effective rank: {ranks}")
        early = self.current_epoch + 1 < max(2, 0.2 * self.num_epochs)
        if get("top1_train") is not None and get("top1_train") >= TOO_EASY_TOP1 and early:
            self.print_to_log_file(f"WARNING: pretext top-1 {get('top1_train'):.3f} this early means the task is too "
                                   f"easy (views too similar or queue too small); the representation may not improve")
        duration = get("epoch_end_timestamps") - get("epoch_start_timestamps")
        self.print_to_log_file(f"Epoch time: {duration:.2f} s")
        self.print_to_log_file(peak_memory_line(self.device))
        values = None
        if self.heldout is not None and self.heldout.due(self.current_epoch, self.num_epochs):
            values = self.heldout.evaluate(self.ssl_network, self.device)  # every rank (collectives under DDP)
            self.print_to_log_file(f"held-out: {self.heldout.summary(values)}")
            channels = bottleneck_channels(self.ssl_network)  # held-out crops >= 4x channels: the rank's limit
            self.logger.local_logger.rank_limits.update({f"held-out {name}": min(channels, values["crops"])
                                                         for name in values["erank"]})
        log_heldout(self.logger, self.current_epoch, values)
        probe = None
        if self.online_probe is not None and self.online_probe.due(self.current_epoch, self.num_epochs):
            probe = self.online_probe.evaluate(self.pretrained_payload(), str(self.output_folder),
                                               type(self).__name__, self.current_epoch, self.device)
            self.print_to_log_file(self.online_probe.summary(probe))
        log_probe(self.logger, self.current_epoch, probe)
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != self.num_epochs - 1:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
            self._latest_epoch = self.current_epoch
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
            run_lock.heartbeat(self.output_folder, duration)  # the run folder's lock says when it last wrote
        self.current_epoch += 1

    def on_epoch_start(self):
        self.logger.log("epoch_start_timestamps", time.time(), self.current_epoch)

    def on_train_end(self):
        super().on_train_end()
        if self.local_rank != 0:
            return
        path = write_pretrained_weights(self.pretrained_payload(), os.path.join(self.output_folder, WEIGHTS_FILE))
        self.print_to_log_file(f"pretrained weights written to {path}")
        target = self.heldout_settings["target"] if self.heldout_settings else "<labelled dataset>"
        # no end-of-run spectrum of the few training-case batches nnU-Net validates on (fewer samples than channels
        # cap the rank): the held-out rank is in progress.png, the spectrum on held-out patches is nnssl_spectrum's
        self.print_to_log_file(f"collapse spectrum on held-out patches against random init: nnssl_spectrum -d "
                               f"{target} -c {self.configuration_name} --checkpoints {path}")

    def pretrained_payload(self) -> dict:
        """The pretrained-weights file's content for the current weights (nnssl_plugin.pretrained)."""
        plans = plans_identity(self.plans_manager.plans_name, self.plans_manager.dataset_name,
                               self.configuration_name, self.configuration_manager.configuration)
        training = {"epochs": int(self.current_epoch), "iterations_per_epoch": self.num_iterations_per_epoch,
                    "batch_size": int(self.batch_size), "seed": self.seed, "trainer": type(self).__name__,
                    "recipe": self.recipe.to_dict(), "method_options": dict(self.method_options),
                    "nonfinite_steps_skipped": int(self.nonfinite_steps)}
        return pretrained_payload(self.ssl_network, self.family, plans, self.num_input_channels, training)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("pretraining: nnU-Net's segmentation validation is skipped (no labels)")

    # ----- checkpoints ------------------------------------------------------------------------------------------------
    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": self.ssl_network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": None,
            "current_epoch": self.current_epoch + 1,
            "init_args": {k: v for k, v in self.my_init_kwargs.items() if k != "device"},
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": None,
            "rng_state": capture_rng(),
            "nnssl_recipe": self.recipe.to_dict(),
            "nnssl_method_options": self.method_options,
            "nnssl_nonfinite_steps": self.nonfinite_steps,
        }
        save_checkpoint_file(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = (load_checkpoint_file(filename_or_checkpoint, self.device, self.print_to_log_file)
                      if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint)
        refuse_other_method(checkpoint, self.method_config.method,  # before its tensors meet this network
                            filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "the checkpoint")
        check_resumed_recipe(checkpoint.get("nnssl_recipe"), self.recipe,
                             filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "the checkpoint",
                             checkpoint.get("nnssl_method_options"), self.method_options)
        saved = {k[7:] if k.startswith("module.") else k for k in checkpoint["network_weights"]}
        missing = sorted(set(self.ssl_network.state_dict()) - saved)
        if missing:  # the checkpoint of an older plugin layout (e.g. before the key queue recorded case ids)
            raise NnsslError(f"{filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else 'the checkpoint'} "
                             f"comes from an older nnssl_plugin layout ({len(missing)} tensors missing, e.g. "
                             f"{missing[0]}); start a fresh run without --c, or export it as it is")
        self.nonfinite_steps = int(checkpoint.get("nnssl_nonfinite_steps", 0))
        restore_nnunet_state(self, checkpoint)  # nnU-Net's part, shared with the downstream trainers
        self._latest_epoch = self.current_epoch - 1  # the checkpoint resumed from is the latest until the next save
        self._pending_rng_state = checkpoint.get("rng_state")
        self.print_to_log_file(f"resumed from {filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else 'a checkpoint'} at epoch {self.current_epoch}")
