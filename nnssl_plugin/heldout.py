"""Held-out evaluation of the pretext task during pretraining (`nnssl_pretrain --eval-target D [--eval-every K]`).

Pretraining's own "val" runs on the training cases (fold `all`), so it cannot show the pretext task overfitting.
This hook draws crop pairs from a labelled dataset D's preprocessed cases (made with the plans the pretraining set
was prepared on, never pretrained on) and every K epochs evaluates them without updating anything:

- dense methods (hier: Kats, Hirsch, Heinrich, ISBI 2024, arXiv 2401.06473; voxel2vec): the training forward's
  voxel NT-Xent (`terms["loss_voxel"]`) and voxel top-1; V corresponding voxels per batch give 2V rows, each with
  2V − 2 negatives as in training (chance 1 / (2V − 1));
- MoCo family (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297; moco_zca: Hassanpour et al.,
  ISBI 2024, arXiv 2402.14611): every held-out query against all M held-out keys (`pair_embeddings`),

      L = −(1/M) Σ_i log( exp(q_i·k_i / τ) / Σ_j exp(q_i·k_j / τ) ),  top-1 = (1/M) Σ_i [argmax_j q_i·k_j = i]

  i.e. M − 1 negatives per query (the keys of the other held-out crops), chance 1 / M;
- the effective rank (RankMe: Garrido et al. 2023, arXiv 2210.02885) of view 1's pooled raw (and, moco_zca,
  whitened) bottleneck over at least `crops_per_channel` (4) × as many crops as bottleneck channels.

Batch i is drawn inside `isolated_rng` from its own seed, so every evaluation (and every run and resume) sees the
same crops, and the training's random streams are untouched: a run trains identically with and without the hook.
Under DDP every rank calls `evaluate` on its share of the batches (the dense forward gathers negatives across ranks,
as in training) and every rank gets the global values.

Shapes: q, k (M, d) unit vectors; pooled bottlenecks (M, c); a batch as `TwoViewDataLoader` returns it.
"""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.data.two_view import GEOMETRY_KEYS
from nnssl_plugin.data.prepare import MARKER
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.ops.distributed import gather_with_grad, is_distributed
from nnssl_plugin.ops.rank import effective_rank
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
def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        states["mps"] = torch.mps.get_rng_state()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
    if "mps" in states:
        torch.mps.set_rng_state(states["mps"])


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Inside the block python `random`, numpy's global and torch's generators (CPU, every CUDA device, MPS) are
    seeded with `seed`; on exit their states are restored, so the streams outside continue as if it never ran."""
    saved = _rng_states()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        _set_rng_states(saved)


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
    """Batch `index` of the held-out set: `loader.generate_train_batch()` inside isolated_rng(batch_seed)."""
    with isolated_rng(batch_seed(seed, index)):
        return loader.generate_train_batch()


def draw_heldout_batches(loader, num_batches: int, seed: int) -> list[dict]:
    """Batches 0 .. num_batches − 1 of the held-out set (the same crops on every call)."""
    return [draw_heldout_batch(loader, seed, i) for i in range(num_batches)]


def batch_nbytes(batch: dict) -> int:
    return sum(v.nbytes for v in batch.values() if torch.is_tensor(v))


def _split(batch: dict, device: torch.device) -> tuple[dict, dict]:
    """(tensors for the network on `device`, geometry on the CPU); non-tensors (case keys) are dropped."""
    on_device = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v) and k not in GEOMETRY_KEYS}
    return on_device, {k: batch[k] for k in GEOMETRY_KEYS if k in batch}


def _autocast(device: torch.device):
    """The trainer's autocast: AMP on CUDA only."""
    return torch.autocast(device.type) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def _evaluating(network: nn.Module) -> Iterator[None]:
    """eval() and no_grad inside; every submodule's own train/eval mode restored after."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _all_ranks_sum(rows: list[list[float]], device: torch.device) -> torch.Tensor:
    """Element-wise sum over DDP ranks of a (batches, values) table; the table itself without DDP."""
    table = torch.tensor(rows, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(table, op=dist.ReduceOp.SUM)
    return table.cpu()


def _pooled(bottleneck: torch.Tensor) -> torch.Tensor:
    return bottleneck.float().flatten(2).mean(dim=2)  # (n, c, *s) -> (n, c)


# ----- evaluation ---------------------------------------------------------------------------------------------------
def evaluate_dense(network: nn.Module, batches: Iterable[dict], device: torch.device,
                   loss_batches: int | None = None) -> dict:
    """Held-out voxel NT-Xent, top-1 and pooled-bottleneck effective rank of a dense network (hier, voxel2vec).

    The first `loss_batches` batches (all when None) go through the training forward `network(**tensors,
    **geometry)` in eval mode without gradient; loss = mean over them of `terms["loss_voxel"]`, top-1 likewise;
    negatives = mean of 2V − 2 and chance = mean of 1 / (2V − 1) for V voxels in a batch (all ranks' under DDP).
    Every batch's view 1 goes through the encoder alone for the rank (the whole pyramid, voxel sampling and NT-Xent
    of hundreds of batches would cost minutes per evaluation). Returns {"loss", "top1", "chance", "negatives",
    "crops", "erank": {"raw bottleneck": ...}}."""
    rows, pooled = [], []
    with _evaluating(network):
        for i, batch in enumerate(batches):
            on_device, geometry = _split(batch, device)
            with _autocast(device):
                bottleneck = network.encoder(on_device["view1"])[-1]  # (n, c, *s)
                out = network(**on_device, **geometry) if loss_batches is None or i < loss_batches else None
            pooled.append(_pooled(bottleneck))
            if out is not None:
                voxels = int(on_device["voxels1"].shape[0])
                rows.append([float(out["terms"]["loss_voxel"]), float(out["top1"]) * voxels, voxels])
    table = _all_ranks_sum(rows, device)  # (batches, 3)
    world = dist.get_world_size() if is_distributed() else 1
    voxels = table[:, 2]  # V per batch, all ranks
    raw = gather_with_grad(torch.cat(pooled))[0]  # (crops, c)
    return {"loss": float((table[:, 0] / world).mean()), "top1": float((table[:, 1] / voxels).mean()),
            "chance": float((1.0 / (2 * voxels - 1)).mean()), "negatives": float((2 * voxels - 2).mean()),
            "crops": int(raw.shape[0]), "erank": {"raw bottleneck": effective_rank(raw)}}


def evaluate_moco(network: nn.Module, batches: Iterable[dict], device: torch.device,
                  loss_batches: int | None = None) -> dict:
    """Held-out InfoNCE and top-1 of a MoCo-family network over all M held-out pairs, and the effective rank of the
    pooled raw (and whitened) bottleneck, from `network.pair_embeddings(view1, view2)` in eval mode without
    gradient; τ = network.config.temperature. Negatives of a query: the keys of the other held-out crops, except
    crops of its own case when the batches carry `case_ids` (as training masks same-case keys of its queue).
    Returns {"loss", "top1", "chance" (mean of 1 / (1 + negatives)), "negatives" (mean per query; M − 1 without
    case ids), "crops" (M), "erank": {"raw bottleneck": ..., ["whitened bottleneck": ...]}}. `loss_batches` is
    accepted for `evaluate_dense`'s signature (families.py) and not used: every query needs all M keys."""
    if not hasattr(network, "pair_embeddings"):
        raise NnsslError(f"{type(network).__name__} has no pair_embeddings(view1, view2), which the held-out "
                         f"evaluation of the MoCo family needs; update nnssl_plugin or leave out --eval-target")
    parts: dict[str, list[torch.Tensor]] = {"q": [], "k": [], "raw": [], "whitened": [], "case": []}
    with _evaluating(network):
        for batch in batches:
            with _autocast(device):
                out = network.pair_embeddings(batch["view1"].to(device), batch["view2"].to(device))
            if "case_ids" in batch:
                out["case"] = batch["case_ids"].to(device).double()[:, None]  # (n, 1), gathered like the rest
            for name, values in parts.items():
                if out.get(name) is not None:
                    values.append(out[name].float() if name != "case" else out[name])
    joined = {name: gather_with_grad(torch.cat(values))[0] for name, values in parts.items() if values}
    q, k = joined["q"], joined["k"]  # (M, d) each
    logits = q @ k.T / network.config.temperature  # (M, M), positives on the diagonal
    m = q.shape[0]
    target = torch.arange(m, device=q.device)
    if "case" in joined:  # other crops of the query's case are not negatives (as in training's queue)
        case = joined["case"][:, 0]  # (M,)
        same = (case[:, None] == case[None, :]) & ~torch.eye(m, dtype=torch.bool, device=q.device)  # (M, M)
        logits = logits.masked_fill(same, float("-inf"))
        negatives = (~same).sum(dim=1).double() - 1  # (M,) valid negatives per query
    else:
        negatives = torch.full((m,), float(m - 1), dtype=torch.float64, device=q.device)
    erank = {"raw bottleneck": effective_rank(joined["raw"])}
    if "whitened" in joined:
        erank["whitened bottleneck"] = effective_rank(joined["whitened"])
    return {"loss": float(F.cross_entropy(logits, target)),
            "top1": float((logits.argmax(dim=1) == target).double().mean()),
            "chance": float((1.0 / (negatives + 1)).mean()), "negatives": float(negatives.mean()), "crops": m,
            "erank": erank}


def bottleneck_channels(network: nn.Module) -> int:
    """Channels of the bottleneck (the planned encoder's last stage)."""
    return int(network.encoder.output_channels[-1])


class HeldoutEvaluator:
    """The hook: `create` at the start of training (after the network exists), `due` + `evaluate` at epoch ends.
    `evaluate_fn(network, batches, device, loss_batches)` is the method family's evaluation (`families.py`:
    `evaluate_moco` or `evaluate_dense`)."""

    def __init__(self, loader, target: str, num_batches: int, config: HeldoutConfig,
                 stored: dict[int, dict] | None, description: str, evaluate_fn: Callable[..., dict]):
        self.loader, self.target, self.num_batches, self.config = loader, target, num_batches, config
        self.stored = stored  # batch index -> batch (this rank's share), or None: redrawn at each evaluation
        self.description = description
        self.evaluate_fn = evaluate_fn

    @classmethod
    def create(cls, target: str | int, pretrain_plans: dict, configuration: str, pretrain_folder: str | Path,
               make_loader: Callable, network: nn.Module, batch_size: int, evaluate_fn: Callable[..., dict],
               negatives: Callable[[int], str], config: HeldoutConfig = HeldoutConfig()) -> HeldoutEvaluator:
        """Locate the target's data (`locate_target_data`), refuse cases shared with the pretraining set, build
        `make_loader(dataset)` (the trainer's two_view_loader) over the target's cases and draw the batches:
        enough for crops_per_channel × bottleneck channels crops, a multiple of the DDP world size. `evaluate_fn`
        and `negatives(crops)` (what a query is scored against, for the description) come from the method's family
        (`families.Family.heldout`, `.heldout_negatives`)."""
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
        world, rank = (dist.get_world_size(), dist.get_rank()) if is_distributed() else (1, 0)
        num_batches = max(config.min_batches, batches_for_rank(channels, batch_size, config.crops_per_channel))
        num_batches = math.ceil(num_batches / world) * world  # every rank runs as many forwards (collectives)
        dataset_class = infer_dataset_class(str(folder))
        with isolated_rng(config.seed):
            cases = dataset_class.get_identifiers(str(folder))
            loader = make_loader(dataset_class(str(folder), cases))
        mine = range(rank, num_batches, world)
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
        return cls(loader, target_name, num_batches, config, stored, description, evaluate_fn)

    def due(self, epoch: int, num_epochs: int) -> bool:
        """Evaluate after this epoch: every `every` epochs and at the last."""
        return (epoch + 1) % self.config.every == 0 or epoch == num_epochs - 1

    def batches(self) -> Iterator[dict]:
        """This rank's held-out batches, the same crops at every call."""
        world, rank = (dist.get_world_size(), dist.get_rank()) if is_distributed() else (1, 0)
        for i in range(rank, self.num_batches, world):
            yield self.stored[i] if self.stored is not None else draw_heldout_batch(self.loader, self.config.seed, i)

    def evaluate(self, network: nn.Module, device: torch.device) -> dict:
        """The held-out values of the unwrapped pretraining network (call on every rank under DDP); the network's
        weights, buffers, train/eval modes and every random stream are as before."""
        world = dist.get_world_size() if is_distributed() else 1
        with isolated_rng(self.config.seed):  # the loss from min_batches batches (all ranks), the rank from all
            return self.evaluate_fn(network, self.batches(), device, math.ceil(self.config.min_batches / world))

    def summary(self, values: dict) -> str:
        """One log line."""
        ranks = ", ".join(f"{name} {value:.2f}" for name, value in values["erank"].items())
        return (f"held-out ({self.target}, {values['crops']} crops): loss {values['loss']:.4f}, top-1 "
                f"{values['top1']:.3f} (chance {values['chance']:.4f}: {values['negatives']:.0f} negatives); "
                f"effective rank: {ranks}")
