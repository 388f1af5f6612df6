"""The held-out pretext on common views: a finished pretraining run scored on the same held-out crops as every other
method of its family, under each family member's views and under clean views, so that "its held-out loss ends lower"
compares one task, not each method on its own views (`nnssl_pretrain --eval-target` scores a run on its own views
only).

For a run of method m of family F, and for each view set V of {clean, every method of F}: the target's preprocessed
cases (never pretrained on, as the hook's) are drawn into `batches` two-view batches with the loader options of V
(`Family.views` of V's config; clean = no photometric or local transforms, V's geometry), batch i inside an isolated
random stream seeded from (seed, i) (`heldout.draw_heldout_batches`), so every run of F, every seed, sees the same
crops, correspondences and negatives under V; then F's held-out evaluation (`Family.heldout`: the dense family's
voxel NT-Xent with 2V − 2 negatives per voxel, the MoCo family's InfoNCE over all held-out pairs) of m's network,
loaded from the run's checkpoint_final.pth (`weights_only=True`). Chance is ln(negatives + 1).

    python -m nnssl_plugin.cli.common_views <run fold_all> --target 991 -c 3d_cpu -device cpu -o out.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_common_views"
CLEAN = "clean"


def clean_options(options: dict) -> dict:
    """The loader options of a view set without its photometric and local transforms (geometry kept)."""
    return {**options, "view_transforms": None, "local_transforms": None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished run's fold_all folder (checkpoint_final.pth, nnssl_run.json)")
    p.add_argument("--target", required=True, help="the labelled dataset whose cases are held out (as --eval-target)")
    p.add_argument("-c", default="3d_fullres", help="configuration of the run (default 3d_fullres)")
    p.add_argument("-p", default="nnsslPretrainPlans", help="the run's pretraining plans (default nnsslPretrainPlans)")
    p.add_argument("--batches", type=int, default=16, help="held-out batches per view set (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out crops (default 0, the hook's)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"))
    p.add_argument("-o", required=True, help="the JSON to write")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from nnssl_plugin import trainer_names
    from nnssl_plugin.checkpoints import safe_load
    from nnssl_plugin.cli.pretrain import cpu_threads
    from nnssl_plugin.config import METHODS, method_config
    from nnssl_plugin.data.two_view import TwoViewDataLoader
    from nnssl_plugin.export import build_planned_network
    from nnssl_plugin.families import family_of
    from nnssl_plugin.heldout import draw_heldout_batches, locate_target_data
    from nnssl_plugin.intensity import unit_ranges
    from nnssl_plugin.io_utils import atomic_write_json, load_json
    from nnssl_plugin.modules.network_protocol import PlanContext
    from nnssl_plugin.paths import preprocessed_folder
    from nnssl_plugin.plans import load_plans, resolve_configuration
    from nnssl_plugin.data.prepare import MARKER
    from nnssl_plugin.rng import isolated

    if args.device == "cpu":
        torch.set_num_threads(cpu_threads())
    device = torch.device(args.device)
    run = Path(args.run)
    record_path, final = run / "nnssl_run.json", run / "checkpoint_final.pth"
    if not final.is_file() or not record_path.is_file():
        raise NnsslError(f"{run} holds no finished run (checkpoint_final.pth and nnssl_run.json); pass the fold_all "
                         f"folder of a finished nnssl_pretrain run")
    record = load_json(record_path)
    method = trainer_names.method_of(trainer_names.trainer_of_run_folder(run.resolve().parent.name))
    if method not in METHODS:
        raise NnsslError(f"{run.resolve().parent.name} is not a run folder of nnssl_pretrain (nnsslPretrainer_<method>"
                         f"...); pass the fold_all folder of a finished run")
    config = method_config(method)
    options = record.get("method_options") or {}
    if options:
        config = replace(config, **options)
    family = family_of(config)
    dataset = run.resolve().parents[1].name
    plans = load_plans(dataset, args.p)
    configuration = resolve_configuration(plans, args.c)
    dataset_json = load_json(preprocessed_folder() / dataset / "dataset.json")
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    channels = determine_num_input_channels(pm, pm.get_configuration(args.c), dataset_json)
    patch = tuple(int(p) for p in configuration["patch_size"])
    batch_size = int(configuration["batch_size"])
    unet = build_planned_network(plans, args.c, channels, dataset_json)
    plan = PlanContext(channels, batch_size, patch, tuple(configuration["architecture"]["arch_kwargs"]["strides"]),
                       tuple(unit_ranges(plans, configuration)))
    network = family.network.from_plan(unet, config, plan)
    state = safe_load(final)["network_weights"]
    network.load_state_dict(state)
    network.to(device)

    folder = locate_target_data(args.target, plans, args.c)
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    target_plans = PlansManager(load_plans(folder.parent.name, plans[MARKER]["target_plans"]))
    labels = target_plans.get_label_manager(load_json(folder.parent / "dataset.json"))
    dataset_class = infer_dataset_class(str(folder))
    members = [m for m, c in METHODS.items() if c.family == config.family]
    view_sets = {CLEAN: clean_options(family.views(config, len(patch) == 2, plans, configuration))}
    for member in members:
        view_sets[member] = family.views(method_config(member), len(patch) == 2, plans, configuration)
    values = {}
    for name, loader_options in view_sets.items():
        with isolated(args.seed):
            cases = dataset_class.get_identifiers(str(folder))
            loader = TwoViewDataLoader(dataset_class(str(folder), cases), batch_size, patch, labels, **loader_options)
        batches = draw_heldout_batches(loader, args.batches, args.seed)
        for batch in batches:  # the dense forward reads the clean crops for its restoration term only
            batch.setdefault("clean1", batch["view1"])
            batch.setdefault("clean2", batch["view2"])
        with isolated(args.seed):
            out = family.heldout(network, batches, device, None, "amp")
        values[name] = {"loss": out["loss"], "top1": out["top1"], "chance_loss": math.log(out["negatives"] + 1),
                        "chance_top1": out["chance"], "negatives": out["negatives"], "crops": out["crops"]}
        print(f"{PROG}: {method} on {name} views: loss {out['loss']:.4f} (chance {math.log(out['negatives'] + 1):.4f})"
              f", top-1 {out['top1']:.4f} (chance {out['chance']:.4f})")
    atomic_write_json(Path(args.o), {"format": "nnssl_common_views/1", "run": str(run), "method": method,
                                     "family": config.family, "target": folder.parent.name, "configuration": args.c,
                                     "batches": args.batches, "batch_size": batch_size, "seed": args.seed,
                                     "views": values})
    return 0


if __name__ == "__main__":
    sys.exit(main())
