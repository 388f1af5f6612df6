"""A pretraining run read back for evaluation: its network built on its plans and loaded from a checkpoint
(`weights_only=True`, through `checkpoints.safe_load`), with its method's config as the run recorded it; and held-out
two-view batches of a labelled target drawn with given loader options, batch i inside an isolated random stream
seeded from (seed, i) (`heldout.draw_heldout_batches`), so every run, every seed, sees the same crops and
correspondences. Used by `nnssl_plugin.cli.common_views` and the MoCo readout screen (studies/moco_screen.py)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nnssl_plugin.errors import NnsslError


@dataclass
class FinishedRun:
    method: str
    config: Any  # the method's config with the run's recorded options
    family: Any  # families.Family
    dataset: str  # the pretraining dataset's folder name
    plans: dict
    configuration: dict  # the plans' configuration entry
    patch: tuple[int, ...]
    batch_size: int
    network: Any  # the family's PretrainingNetwork, on the device, loaded


def load_run_network(run: Path, plans_name: str, configuration_name: str, device, checkpoint: str =
                     "checkpoint_final.pth") -> FinishedRun:
    """The network of the run in `run` (its fold_all folder) loaded from `checkpoint` there."""
    from nnssl_plugin import trainer_names
    from nnssl_plugin.checkpoints import safe_load
    from nnssl_plugin.config import METHODS, method_config
    from nnssl_plugin.io_utils import load_json

    run = Path(run)
    record_path, weights = run / "nnssl_run.json", run / checkpoint
    if not weights.is_file() or not record_path.is_file():
        raise NnsslError(f"{run} holds no {checkpoint} and nnssl_run.json; pass the fold_all folder of a finished "
                         f"nnssl_pretrain run")
    method = trainer_names.method_of(trainer_names.trainer_of_run_folder(run.resolve().parent.name))
    if method not in METHODS:
        raise NnsslError(f"{run.resolve().parent.name} is not a run folder of nnssl_pretrain (nnsslPretrainer_<method>"
                         f"...); pass the fold_all folder of a finished run")
    config = method_config(method)
    options = load_json(record_path).get("method_options") or {}
    if options:
        config = replace(config, **options)
    loaded = build_run_network(run.resolve().parents[1].name, method, config, plans_name, configuration_name, device)
    loaded.network.load_state_dict(safe_load(weights)["network_weights"])
    return loaded


def build_run_network(dataset: str, method: str, config, plans_name: str, configuration_name: str,
                      device) -> FinishedRun:
    """The method's pretraining network on the prepared dataset's plans, freshly initialised (torch's global random
    stream: seed it for a reproducible random init), on `device`."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnssl_plugin.export import build_planned_network
    from nnssl_plugin.families import family_of
    from nnssl_plugin.intensity import restoration_ranges, unit_ranges
    from nnssl_plugin.io_utils import load_json
    from nnssl_plugin.modules.network_protocol import PlanContext
    from nnssl_plugin.paths import preprocessed_folder
    from nnssl_plugin.plans import load_plans, resolve_configuration

    family = family_of(config)
    plans = load_plans(dataset, plans_name)
    configuration = resolve_configuration(plans, configuration_name)
    dataset_json = load_json(preprocessed_folder() / dataset / "dataset.json")
    pm = PlansManager(plans)
    channels = determine_num_input_channels(pm, pm.get_configuration(configuration_name), dataset_json)
    patch = tuple(int(p) for p in configuration["patch_size"])
    batch_size = int(configuration["batch_size"])
    unet = build_planned_network(plans, configuration_name, channels, dataset_json)
    plan = PlanContext(channels, batch_size, patch, tuple(configuration["architecture"]["arch_kwargs"]["strides"]),
                       tuple(unit_ranges(plans, configuration)), tuple(restoration_ranges(plans, configuration)))
    network = family.network.from_plan(unet, config, plan).to(device)
    return FinishedRun(method, config, family, dataset, plans, configuration, patch, batch_size, network)


def heldout_view_batches(target: str | int, run: FinishedRun, configuration_name: str, loader_options: dict,
                         batches: int, seed: int) -> list[dict]:
    """`batches` two-view batches of the target's preprocessed cases (never pretrained on) with `loader_options`."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnssl_plugin.data.prepare import MARKER
    from nnssl_plugin.data.two_view import TwoViewDataLoader
    from nnssl_plugin.heldout import draw_heldout_batches, locate_target_data
    from nnssl_plugin.io_utils import load_json
    from nnssl_plugin.plans import load_plans
    from nnssl_plugin.rng import isolated

    folder = locate_target_data(target, run.plans, configuration_name)
    target_plans = PlansManager(load_plans(folder.parent.name, run.plans[MARKER]["target_plans"]))
    labels = target_plans.get_label_manager(load_json(folder.parent / "dataset.json"))
    dataset_class = infer_dataset_class(str(folder))
    with isolated(seed):
        cases = dataset_class.get_identifiers(str(folder))
        loader = TwoViewDataLoader(dataset_class(str(folder), cases), run.batch_size, run.patch, labels,
                                   **loader_options)
    return draw_heldout_batches(loader, batches, seed)


def target_name(target: str | int, run: FinishedRun, configuration_name: str) -> str:
    """The target dataset's folder name, as `heldout_view_batches` finds it."""
    from nnssl_plugin.heldout import locate_target_data

    return locate_target_data(target, run.plans, configuration_name).parent.name
