"""Held-out evaluation of the pretext task during pretraining (`nnssl_pretrain --eval-target D [--eval-every K]`).

Pretraining's own "val" runs on the training cases (fold `all`), so it cannot show the pretext task overfitting.
This hook draws crop pairs from a labelled dataset D's preprocessed cases (made with the plans the pretraining set
was prepared on, never pretrained on) and every K epochs evaluates them without updating anything:

the method family's evaluator (`Family.heldout`: `methods/moco/heldout.py`, `methods/hier/heldout.py`) computes the
pretext loss, top-1 and the effective rank (RankMe: Garrido et al. 2023, arXiv 2210.02885) of the pooled bottleneck
over at least `crops_per_channel` (4) × as many crops as bottleneck channels, under the run's autocast
(`nnssl_plugin.precision`, `--bf16` included). This module holds the hook and what every evaluator shares.

Batch i is drawn inside `nnssl_plugin.rng.isolated` from its own seed, so every evaluation (and every run and resume) sees the
same crops, and the training's random streams are untouched: a run trains identically with and without the hook.
Under DDP every rank calls `evaluate` on its share of the batches (the dense forward gathers negatives across ranks,
as in training) and every rank gets the global values.

Shapes: a batch as `TwoViewDataLoader` returns it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from nnssl_plugin.data.prepare import MARKER
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.ops.distributed import all_reduce_sum, rank, world_size
from nnssl_plugin.rng import isolated
from nnssl_plugin.paths import find_dataset_name, preprocessed_folder
from nnssl_plugin.plans import load_plans, resolve_configuration

# what decides the preprocessed arrays: equal in both plans, or the target's crops are not the pretraining kind
PLANS_FIELDS = ("transpose_forward", "foreground_intensity_properties_per_channel")
CONFIGURATION_FIELDS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                        "resampling_fn_data_kwargs", "preprocessor_name")


@dataclass(frozen=True)
class HeldoutConfig:
    every: int = 5  # nnssl_pretrain's --eval-every default: a few points per short run, little time per epoch
    seed: int = 0  # crops depend on this alone (not the run's seed): runs, seeds and resumes see the same crops
    crops_per_channel: float = 4.0  # effective rank of c channels: fewer than ~4c samples cap it below c
    min_batches: int = 8  # a top-1 and loss from at least this many batches even for a narrow bottleneck
    max_stored_bytes: int = 2 * 1024 ** 3  # larger held-out sets are redrawn from their seeds at each evaluation


# ----- random streams ---------------------------------------------------------------------------------------------
def batch_seed(seed: int, index: int) -> int:
    """The seed of held-out batch `index`: independent streams per batch, so any subset can be redrawn alone."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ----- the target's data -------------------------------------------------------------------------------------------
def locate_target_data(target: str | int, pretrain_plans: dict, configuration: str) -> Path:
    """nnUNet_preprocessed/<target>/<data_identifier>: the target's arrays for `configuration`, made with the target
    plans that nnssl_prepare copied into `pretrain_plans` (so held-out and pretraining crops are preprocessed alike).
    Raises NnsslError naming the fix if the plans came from another dataset, changed since, or the data is missing."""
    target_name = find_dataset_name(target, in_raw=False, in_preprocessed=True,
                                    unprepared_hint="nnUNetv2_plan_and_preprocess -d {id}")
    target_id = int(target_name[7:10])
    dataset, plans_name = pretrain_plans.get("dataset_name", "?"), pretrain_plans.get("plans_name", "?")
    record = pretrain_plans.get(MARKER)
    if record is None:
        raise NnsslError(f"plans '{plans_name}' of {dataset} were not written by nnssl_prepare, so which target plans "
                         f"they copy is unknown; prepare the pretraining set on the target's plans: nnssl_prepare -d "
                         f"{dataset} -t {target_id}")
    source, source_plans = record["target_dataset"], record["target_plans"]
    if source != target_name:
        raise NnsslError(f"--eval-target {target_name}: the pretraining plans '{plans_name}' were copied from "
                         f"{source}'s plans '{source_plans}', and {target_name}'s arrays are preprocessed differently; "
                         f"use --eval-target {source}, or prepare the pretraining set on {target_name}'s plans "
                         f"(nnssl_prepare -d {dataset} -t {target_id} --plans-name <new name>)")
    target_plans = load_plans(target_name, source_plans, plan_hint=f"nnUNetv2_plan_and_preprocess -d {target_id}")
    if configuration not in target_plans.get("configurations", {}):
        raise NnsslError(f"configuration '{configuration}' is in the pretraining plans but not in {target_name}'s "
                         f"plans '{source_plans}'; add it there too (e.g. nnssl_add_cpu_config -d {target_id}) or "
                         f"pretrain with a configuration both have")
    mine, theirs = resolve_configuration(pretrain_plans, configuration), resolve_configuration(target_plans,
                                                                                             configuration)
    changed = [f for f in PLANS_FIELDS if pretrain_plans.get(f) != target_plans.get(f)]
    changed += [f for f in CONFIGURATION_FIELDS if mine.get(f) != theirs.get(f)]
    if changed:
        raise NnsslError(f"{target_name}'s plans '{source_plans}' changed since nnssl_prepare copied them "
                         f"({changed[0]} differs), so its arrays are preprocessed differently from {dataset}'s; "
                         f"re-run nnssl_prepare -d {dataset} -t {target_id} --overwrite")
    folder = preprocessed_folder() / target_name / theirs["data_identifier"]
    if not folder.is_dir() or not any(p.suffix in (".b2nd", ".npz", ".npy") for p in folder.iterdir()):
        raise NnsslError(f"{folder} holds no preprocessed cases; run nnUNetv2_preprocess -d {target_id} -plans_name "
                         f"{source_plans} -c {configuration}")
    return folder


def shared_cases(target_folder: str | Path, pretrain_folder: str | Path) -> list[str]:
    """Cases of the target that are also pretraining cases: the same identifier and the identical preprocessed
    image (the phantom's two sets share names but not images). Only same-named cases are compared."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    target_cls, pretrain_cls = (infer_dataset_class(str(f)) for f in (target_folder, pretrain_folder))
    common = sorted(set(target_cls.get_identifiers(str(target_folder)))
                    & set(pretrain_cls.get_identifiers(str(pretrain_folder))))
    if not common:
        return []
    targets, pretrains = target_cls(str(target_folder), list(common)), pretrain_cls(str(pretrain_folder), list(common))
    shared = []
    for case in common:
        a, b = targets.load_case(case)[0], pretrains.load_case(case)[0]
        if tuple(a.shape) == tuple(b.shape) and np.array_equal(np.asarray(a[:]), np.asarray(b[:])):
            shared.append(case)
    return shared


# ----- batches ------------------------------------------------------------------------------------------------------
def batches_for_rank(channels: int, batch_size: int, crops_per_channel: float = 4.0) -> int:
    """Batches of `batch_size` crops that give at least crops_per_channel × channels crops."""
    if channels < 1 or batch_size < 1:
        raise ValueError(f"expects channels >= 1 and batch_size >= 1, got {channels} and {batch_size}")
    return math.ceil(crops_per_channel * channels / batch_size)


def draw_heldout_batch(loader, seed: int, index: int) -> dict:
    """Batch `index` of the held-out set: `loader.generate_train_batch()` inside isolated(batch_seed)."""
    with isolated(batch_seed(seed, index)):
        return loader.generate_train_batch()


def draw_heldout_batches(loader, num_batches: int, seed: int) -> list[dict]:
    """Batches 0 .. num_batches − 1 of the held-out set (the same crops on every call)."""
    return [draw_heldout_batch(loader, seed, i) for i in range(num_batches)]


def batch_nbytes(batch: dict) -> int:
    return sum(v.nbytes for v in batch.values() if torch.is_tensor(v))


def split_batch(batch: dict, device: torch.device, geometry_keys: Iterable[str]) -> tuple[dict, dict]:
    """(tensors for the network on `device`, the family's geometry entries on the CPU); non-tensors (case keys) are
    dropped."""
    geometry_keys = tuple(geometry_keys)
    on_device = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v) and k not in geometry_keys}
    return on_device, {k: batch[k] for k in geometry_keys if k in batch}


@contextlib.contextmanager
def evaluating(network: nn.Module) -> Iterator[None]:
    """eval() and no_grad inside; every submodule's own train/eval mode restored after."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def all_ranks_sum(rows: list[list[float]], device: torch.device) -> torch.Tensor:
    """Element-wise sum over DDP ranks of a (batches, values) table; the table itself without DDP."""
    return all_reduce_sum(torch.tensor(rows, dtype=torch.float64, device=device)).cpu()


def bottleneck_channels(network: nn.Module) -> int:
    """Channels of the bottleneck (the planned encoder's last stage)."""
    return int(network.encoder.output_channels[-1])


class HeldoutEvaluator:
    """The hook: `create` at the start of training (after the network exists), `due` + `evaluate` at epoch ends.
    `evaluate_fn(network, batches, device, loss_batches, precision)` is the method family's evaluation
    (`Family.heldout`); `precision` the run's autocast ("amp" or "bf16", `nnssl_plugin.precision`)."""

    def __init__(self, loader, target: str, num_batches: int, config: HeldoutConfig,
                 stored: dict[int, dict] | None, description: str, evaluate_fn: Callable[..., dict],
                 precision: str = "amp"):
        self.loader, self.target, self.num_batches, self.config = loader, target, num_batches, config
        self.stored = stored  # batch index -> batch (this rank's share), or None: redrawn at each evaluation
        self.description = description
        self.evaluate_fn = evaluate_fn
        self.precision = precision

    @classmethod
    def create(cls, target: str | int, pretrain_plans: dict, configuration: str, pretrain_folder: str | Path,
               make_loader: Callable, network: nn.Module, batch_size: int, evaluate_fn: Callable[..., dict],
               negatives: Callable[[int], str], config: HeldoutConfig = HeldoutConfig(),
               precision: str = "amp") -> HeldoutEvaluator:
        """Locate the target's data (`locate_target_data`), refuse cases shared with the pretraining set, build
        `make_loader(dataset)` (the trainer's two_view_loader) over the target's cases and draw the batches:
        enough for crops_per_channel × bottleneck channels crops, a multiple of the DDP world size. `evaluate_fn`
        and `negatives(crops)` (what a query is scored against, for the description) come from the method's family
        (`Family.heldout`, `.heldout_negatives`)."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        folder = locate_target_data(target, pretrain_plans, configuration)
        target_name = folder.parent.name
        shared = shared_cases(folder, pretrain_folder)
        if shared:
            raise NnsslError(f"--eval-target {target_name} shares {len(shared)} case(s) with the pretraining set "
                             f"{pretrain_plans.get('dataset_name', pretrain_folder)} (identical preprocessed images: "
                             f"{', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}); held-out cases must be "
                             f"unseen: choose another --eval-target or remove them from the pretraining set")
        channels = bottleneck_channels(network)
        world, this_rank = world_size(), rank()
        num_batches = max(config.min_batches, batches_for_rank(channels, batch_size, config.crops_per_channel))
        num_batches = math.ceil(num_batches / world) * world  # every rank runs as many forwards (collectives)
        dataset_class = infer_dataset_class(str(folder))
        with isolated(config.seed):
            cases = dataset_class.get_identifiers(str(folder))
            loader = make_loader(dataset_class(str(folder), cases))
        mine = range(this_rank, num_batches, world)
        first = draw_heldout_batch(loader, config.seed, mine[0])
        nbytes = batch_nbytes(first) * len(mine)
        stored = None
        if nbytes <= config.max_stored_bytes:
            stored = {mine[0]: first, **{i: draw_heldout_batch(loader, config.seed, i) for i in mine[1:]}}
        crops = num_batches * batch_size
        description = (f"held-out evaluation on {target_name} ({len(cases)} cases never pretrained on, {folder}): "
                       f"{num_batches} batches of {batch_size} crop pairs = {crops} crops (>= "
                       f"{config.crops_per_channel:g} x {channels} bottleneck channels for the effective rank; "
                       f"{negatives(crops)}), every {config.every} epochs and at the last; {nbytes / 1e6:.0f} MB "
                       f"{'kept in memory' if stored is not None else 'redrawn at each evaluation'}")
        return cls(loader, target_name, num_batches, config, stored, description, evaluate_fn, precision)

    def due(self, epoch: int, num_epochs: int) -> bool:
        """Evaluate after this epoch: every `every` epochs and at the last."""
        return (epoch + 1) % self.config.every == 0 or epoch == num_epochs - 1

    def batches(self) -> Iterator[dict]:
        """This rank's held-out batches, the same crops at every call."""
        world, this_rank = world_size(), rank()
        for i in range(this_rank, self.num_batches, world):
            yield self.stored[i] if self.stored is not None else draw_heldout_batch(self.loader, self.config.seed, i)

    def evaluate(self, network: nn.Module, device: torch.device) -> dict:
        """The held-out values of the unwrapped pretraining network (call on every rank under DDP); the network's
        weights, buffers, train/eval modes and every random stream are as before."""
        world = world_size()
        with isolated(self.config.seed):  # the loss from min_batches batches (all ranks), the rank from all
            return self.evaluate_fn(network, self.batches(), device, math.ceil(self.config.min_batches / world),
                                    self.precision)

    def summary(self, values: dict) -> str:
        """One log line."""
        ranks = ", ".join(f"{name} {value:.2f}" for name, value in values["erank"].items())
        return (f"held-out ({self.target}, {values['crops']} crops): loss {values['loss']:.4f}, top-1 "
                f"{values['top1']:.3f} (chance {values['chance']:.4f}: {values['negatives']:.0f} negatives); "
                f"effective rank: {ranks}")
